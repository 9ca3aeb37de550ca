"""GPU-aware planning: GPUs give the concurrency, GPU memory bounds the batch, discovery reads both from Ray.

No GPU is needed: clusters are declared, or ``ray.nodes()``-shaped dicts as a GPU cluster reports them.
"""

from __future__ import annotations

from typing import Any

import pytest

from daftscale import ClusterSpec, ConfigError, PlanError, UdfProfile, UdfResources, plan, profile_numbers
from daftscale.cluster import from_ray_nodes, local_gpu_memory, parse_nvidia_smi_memory
from daftscale.config import BATCH_MEMORY_FRACTION

GiB = 1 << 30
LIGHT = profile_numbers(1_000_000, 100)
IMAGES = profile_numbers(100_000, 3 << 20)  # 3 MiB decoded per row: heavy


def _gpu_node(gpus: float, node_id: str = "n", **extra: Any) -> dict[str, Any]:
    return {"Alive": True, "NodeID": node_id, "Resources": {"CPU": 16.0, "GPU": gpus, "memory": 64 * GiB, **extra}}


@pytest.mark.parametrize(
    ("gpus_per_node", "udf_gpus", "expected"),
    [(1, 1, 4), (8, 1, 32), (2, 0.5, 16), (1, 0.25, 16), (4, 2, 8), (3, 0.5, 24)],
)
def test_concurrency_is_what_the_gpus_hold(gpus_per_node: float, udf_gpus: float, expected: int) -> None:
    cluster = ClusterSpec.declared(nodes=4, cpus_per_node=32, gpus_per_node=gpus_per_node)
    p = plan(LIGHT, cluster, udf=UdfResources.of(gpus=udf_gpus))
    assert p.concurrency == expected
    assert p.udf_gpus == udf_gpus
    assert "GPU" in p.steps[1]  # the step says the GPUs set C
    assert f"gpus={udf_gpus:g}" in p.to_code()


def test_asking_for_more_gpus_than_exist_warns_and_clamps() -> None:
    cluster = ClusterSpec.declared(nodes=2, cpus_per_node=32, gpus_per_node=4)
    p = plan(LIGHT, cluster, concurrency=16, udf=UdfResources.of(gpus=1))
    assert p.concurrency == 8
    (warning,) = [w for w in p.warnings if w.code == "CONCURRENCY_EXCEEDS_CLUSTER"]
    assert "GPUs" in warning.message and "room for 8" in warning.message
    half = plan(LIGHT, cluster, concurrency=16, udf=UdfResources.of(gpus=0.5))
    assert half.concurrency == 16 and "CONCURRENCY_EXCEEDS_CLUSTER" not in half.warning_codes()


def test_gpu_udf_on_a_cluster_without_gpus_is_a_plan_error() -> None:
    with pytest.raises(PlanError, match="GPU per actor but the cluster has 0 GPUs") as info:
        plan(LIGHT, ClusterSpec.declared(nodes=2, cpus_per_node=8), udf=UdfResources.of(gpus=1))
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="whole number"):
        plan(LIGHT, ClusterSpec.declared(nodes=2, gpus_per_node=4), udf=UdfResources.of(gpus=1.5))


def test_batch_bound_uses_gpu_memory_shared_by_fractional_actors() -> None:
    cluster = ClusterSpec.declared(nodes=2, cpus_per_node=16, gpus_per_node=1, gpu_memory_per_gpu="16GiB")
    whole = plan(IMAGES, cluster, udf=UdfResources.of(gpus=1), batch_size=4096, inflation=1.0)
    half = plan(IMAGES, cluster, udf=UdfResources.of(gpus=0.5), batch_size=4096, inflation=1.0)
    assert whole.batch_size == int(16 * GiB * BATCH_MEMORY_FRACTION // (3 << 20))  # 2730
    assert half.batch_size == int(8 * GiB * BATCH_MEMORY_FRACTION // (3 << 20))  # half a GPU each: 1365
    assert "BATCH_LOWERED_FOR_MEMORY" in half.warning_codes()
    assert "GPU memory" in next(w.message for w in half.warnings if w.code == "BATCH_LOWERED_FOR_MEMORY")


def test_gpu_batch_bound_uses_the_measured_memory_per_row() -> None:
    cluster = ClusterSpec.declared(nodes=1, cpus_per_node=8, gpus_per_node=1, gpu_memory_per_gpu="8GiB")
    measured = UdfProfile(seconds_per_row=0.001, seconds_per_batch=0.05, memory_per_row_bytes=64 << 20)
    p = plan(IMAGES, cluster, udf=UdfResources.of(gpus=1), udf_profile=measured)
    assert p.batch_size == int(8 * GiB * BATCH_MEMORY_FRACTION // (64 << 20))  # 64, not the overhead's 405


def test_gpu_memory_unknown_means_no_gpu_bound_not_node_memory() -> None:
    cluster = ClusterSpec.declared(nodes=1, cpus_per_node=8, gpus_per_node=1, memory_per_node="1GiB")
    p = plan(IMAGES, cluster, udf=UdfResources.of(gpus=1), batch_size=512)
    assert p.batch_size == 512  # node RAM does not bound a GPU actor's batch


def test_discovery_reads_gpus_and_probed_memory_from_ray_nodes() -> None:
    nodes = [_gpu_node(8, "a"), _gpu_node(8, "b"), {"Alive": False, "Resources": {"GPU": 1.0}}]
    seen: list[list[dict[str, Any]]] = []

    def probe(alive: list[dict[str, Any]]) -> list[int]:
        seen.append(alive)
        return [80 * GiB] * 8 + [40 * GiB] * 8  # node b has the smaller GPUs: the smallest decides

    spec = from_ray_nodes(nodes, gpu_memory_probe=probe)
    assert (spec.nodes, spec.gpus_per_node, spec.gpu_memory_per_gpu) == (2, 8.0, 40 * GiB)
    assert [n["NodeID"] for n in seen[0]] == ["a", "b"]
    p = plan(IMAGES, spec, udf=UdfResources.of(gpus=1))
    assert p.concurrency == 16 and p.inputs["gpus_per_node"] == 8.0


def test_declared_gpu_memory_resource_wins_and_no_gpus_means_no_probe() -> None:
    def must_not_run(alive: list[dict[str, Any]]) -> list[int]:
        raise AssertionError("probed although the answer was known")

    declared = from_ray_nodes([_gpu_node(1, gpu_memory=24 * GiB)], gpu_memory_probe=must_not_run)
    assert declared.gpu_memory_per_gpu == 24 * GiB
    cpu_only = from_ray_nodes([{"Alive": True, "Resources": {"CPU": 4.0}}], gpu_memory_probe=must_not_run)
    assert cpu_only.gpus_per_node == 0 and cpu_only.gpu_memory_per_gpu is None
    unknown = from_ray_nodes([_gpu_node(1)], gpu_memory_probe=lambda alive: [])
    assert unknown.gpus_per_node == 1 and unknown.gpu_memory_per_gpu is None


def test_nvidia_smi_output_parsing_and_the_local_probe_without_gpus() -> None:
    assert parse_nvidia_smi_memory("81559\n81559\n") == [81559 << 20] * 2
    assert parse_nvidia_smi_memory("") == []
    assert isinstance(local_gpu_memory(), list)  # [] here (no GPU); never raises


@pytest.mark.ray
def test_live_cluster_without_gpus_discovers_no_gpu_memory(ray_cluster: Any) -> None:
    spec = ray_cluster.spec()
    assert spec.gpus_per_node == 0 and spec.gpu_memory_per_gpu is None
