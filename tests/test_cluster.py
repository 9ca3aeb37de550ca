"""Declared, discovered and local clusters, and addresses that do not answer."""

from __future__ import annotations

import socket
import time

import pytest

from daftscale import ClusterError, ClusterSpec, ConfigError
from daftscale.cluster import check_ray_address, discover, parse_local_cluster, resolve, this_machine
from daftscale.config import parse_memory


def test_declared_cluster_validates_and_parses_memory() -> None:
    spec = ClusterSpec.declared(nodes=4, cpus_per_node=8, gpus_per_node=1, memory_per_node="64GiB")
    assert spec.memory_per_node == 64 << 30 and spec.total_cpus == 32 and spec.total_gpus == 4
    for bad in ({"nodes": 0}, {"nodes": -2}, {"nodes": 2, "cpus_per_node": 0}, {"nodes": 2, "memory_per_node": "lots"}):
        with pytest.raises(ConfigError):
            ClusterSpec.declared(**bad)


@pytest.mark.parametrize("text", ["64GiB", "64 GiB", "64gib", "1.5TB", "512MiB", "1000"])
def test_memory_sizes(text: str) -> None:
    assert parse_memory(text) > 0


@pytest.mark.parametrize("text", ["", "GiB", "-4GiB", "64GiBs", "1e3GB", "0", "0.1"])
def test_malformed_memory_sizes(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_memory(text)


def test_this_machine_and_resolve() -> None:
    local = this_machine()
    assert local.nodes == 1 and (local.cpus_per_node or 0) >= 1 and (local.memory_per_node or 0) > 0
    assert resolve().source == "local"
    assert resolve(nodes=3).nodes == 3
    with pytest.raises(ClusterError, match="cannot be combined"):
        resolve(nodes=2, ray_address="auto")


def test_local_cluster_spec_parsing() -> None:
    assert parse_local_cluster("2x2") == (2, 2)
    for bad in ("2", "0x4", "axb", "2x2x2"):
        with pytest.raises(ClusterError):
            parse_local_cluster(bad)


def test_unreachable_address_fails_fast() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ClusterError, match="does not answer"):
        check_ray_address(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30
    with pytest.raises(ClusterError, match="malformed"):
        check_ray_address("not-an-address")


@pytest.mark.ray
def test_discover_reads_the_live_cluster(ray_cluster) -> None:
    spec = discover(ray_cluster.address)
    assert spec.source == "ray"
    assert spec.nodes == 2 and spec.cpus_per_node == 2
    assert spec.memory_per_node and spec.memory_per_node > 0
