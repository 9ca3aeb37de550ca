"""The cluster a plan is made for: declared by the user, discovered from a live Ray cluster, or this machine.

A :class:`ClusterSpec` is a frozen description (nodes, CPUs, GPUs and memory per node). It is all the
planner knows about hardware, so the same plan can be made for a cluster that does not exist yet.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from daftscale.config import (
    RAY_CONNECT_TIMEOUT_S,
    format_bytes,
    parse_memory,
    require_positive_int,
    require_positive_number,
)
from daftscale.errors import ClusterError


@dataclass(frozen=True)
class ClusterSpec:
    """Nodes and the resources of each (the busiest node decides, so nodes are taken as equal).

    ``cpus_per_node`` and ``memory_per_node`` may be ``None`` when declared without them: the planner
    then skips the bounds that need them instead of guessing.

    >>> ClusterSpec.declared(nodes=4, cpus_per_node=8, memory_per_node="64GiB").describe()
    '4 nodes × 8 CPUs, 64.0 GiB'
    """

    nodes: int
    cpus_per_node: float | None = None
    gpus_per_node: float = 0.0
    memory_per_node: int | None = None
    gpu_memory_per_gpu: int | None = None
    source: str = "declared"

    @classmethod
    def declared(
        cls,
        *,
        nodes: int,
        cpus_per_node: float | None = None,
        gpus_per_node: float | None = None,
        memory_per_node: str | int | None = None,
        gpu_memory_per_gpu: str | int | None = None,
    ) -> ClusterSpec:
        """A cluster described by the user; every number is validated here."""
        return cls(
            nodes=require_positive_int(nodes, "nodes"),
            cpus_per_node=None if cpus_per_node is None else require_positive_number(cpus_per_node, "cpus_per_node"),
            gpus_per_node=0.0
            if gpus_per_node is None
            else require_positive_number(gpus_per_node, "gpus_per_node", allow_zero=True),
            memory_per_node=None if memory_per_node is None else parse_memory(memory_per_node, name="memory_per_node"),
            gpu_memory_per_gpu=None
            if gpu_memory_per_gpu is None
            else parse_memory(gpu_memory_per_gpu, name="gpu_memory"),
            source="declared",
        )

    @property
    def total_cpus(self) -> float | None:
        return None if self.cpus_per_node is None else self.cpus_per_node * self.nodes

    @property
    def total_gpus(self) -> float:
        return self.gpus_per_node * self.nodes

    def describe(self) -> str:
        parts = [f"{self.nodes} node{'s' if self.nodes != 1 else ''}"]
        if self.cpus_per_node is not None:
            parts[0] += f" × {_num(self.cpus_per_node)} CPUs"
        if self.gpus_per_node:
            parts[0] += f" + {_num(self.gpus_per_node)} GPUs"
        if self.memory_per_node is not None:
            parts.append(format_bytes(self.memory_per_node))
        return ", ".join(parts)

    def shape(self) -> dict[str, Any]:
        """The fields that make two clusters equivalent for planning (used to check plan files)."""
        return {
            "nodes": self.nodes,
            "cpus_per_node": self.cpus_per_node,
            "gpus_per_node": self.gpus_per_node,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClusterSpec:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def this_machine() -> ClusterSpec:
    """One node with this machine's CPUs and memory (what Daft's native runner uses)."""
    import psutil

    gpus = _local_gpu_count()
    gpu_memory = local_gpu_memory() if gpus else []
    return ClusterSpec(
        nodes=1,
        cpus_per_node=float(os.cpu_count() or 1),
        gpus_per_node=float(gpus),
        memory_per_node=int(psutil.virtual_memory().total),
        gpu_memory_per_gpu=min(gpu_memory) if gpu_memory else None,
        source="local",
    )


def _local_gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    return (
        len([d for d in os.listdir("/dev") if d.startswith("nvidia") and d[6:].isdigit()])
        if os.path.isdir("/dev")
        else 0
    )


def from_ray_nodes(
    nodes: list[dict[str, Any]], *, gpu_memory_probe: Callable[[list[dict[str, Any]]], list[int]] | None = None
) -> ClusterSpec:
    """Summarise ``ray.nodes()`` as a spec; the smallest alive node sets each per-node figure.

    Taking the smallest node is conservative: the formulas assume equal nodes, and the busiest one
    must still fit its actors and partitions.

    GPU memory: Ray counts GPUs but does not say how big they are. A node's custom ``gpu_memory``
    resource (bytes) is used when set; otherwise, when every node has GPUs, ``gpu_memory_probe(alive
    nodes)`` returns the memory of each GPU it can see (default: :func:`_probe_gpu_memory`, a tiny
    zero-CPU Ray task per GPU node, when this process is connected to Ray). Unknown stays ``None``.

    >>> from_ray_nodes([
    ...     {"Alive": True, "Resources": {"CPU": 4.0, "memory": 8 * 2**30}},
    ...     {"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0, "memory": 16 * 2**30}},
    ...     {"Alive": False, "Resources": {"CPU": 64.0}},
    ... ]).describe()
    '2 nodes × 4 CPUs, 8.0 GiB'
    """
    alive = [n for n in nodes if n.get("Alive", n.get("alive", False))]
    if not alive:
        raise ClusterError("the Ray cluster reports no alive nodes: start its nodes, then retry")
    resources = [n.get("Resources", {}) for n in alive]
    cpus = min(float(r.get("CPU", 0.0)) for r in resources)
    gpus = min(float(r.get("GPU", 0.0)) for r in resources)
    memories = [int(r["memory"]) for r in resources if r.get("memory")]
    gpu_memory = _ray_gpu_memory(resources)
    if gpu_memory is None and gpus > 0:
        probe = gpu_memory_probe
        if probe is None and _ray_connected():
            probe = _probe_gpu_memory
        if probe is not None:
            sizes = [int(size) for size in probe(alive) if size and size > 0]
            gpu_memory = min(sizes) if sizes else None
    return ClusterSpec(
        nodes=len(alive),
        cpus_per_node=cpus or None,
        gpus_per_node=gpus,
        memory_per_node=min(memories) if memories else None,
        gpu_memory_per_gpu=gpu_memory,
        source="ray",
    )


def _ray_gpu_memory(resources: list[dict[str, Any]]) -> int | None:
    # Ray exposes the GPU model as an "accelerator_type:<NAME>" resource, not its memory; a node can
    # declare it as a custom "gpu_memory" resource (bytes), which wins over probing.
    values = [int(r["gpu_memory"]) for r in resources if r.get("gpu_memory")]
    return min(values) if values else None


# How long discovery waits for the GPU-memory probe before planning without GPU memory (the batch
# bound for GPU UDFs is then skipped, never guessed).
GPU_PROBE_TIMEOUT_S = 15.0


def _ray_connected() -> bool:
    import sys

    ray = sys.modules.get("ray")  # never import Ray just to find it is not connected
    return bool(ray is not None and ray.is_initialized())


def parse_nvidia_smi_memory(text: str) -> list[int]:
    r"""Bytes per GPU from ``nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits`` (MiB lines).

    >>> parse_nvidia_smi_memory("81559\n40960\n")
    [85520809984, 42949672960]
    >>> parse_nvidia_smi_memory("[N/A]\n")
    []
    """
    return [int(float(line.strip())) << 20 for line in text.splitlines() if line.strip().replace(".", "").isdigit()]


def local_gpu_memory() -> list[int]:
    """Total memory of each GPU on this machine, via NVML (pynvml) if installed, else ``nvidia-smi``.

    Both see every GPU of the node whatever ``CUDA_VISIBLE_DEVICES`` says, so the probe task needs no
    GPU of its own (and cannot wait behind actors that hold them all). ``[]`` when neither answers.
    """
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        try:
            return [
                int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total)
                for i in range(pynvml.nvmlDeviceGetCount())
            ]
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # not installed, or no driver: fall back to the command line tool
        pass
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=GPU_PROBE_TIMEOUT_S,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi_memory(out)


def _probe_gpu_memory(alive: list[dict[str, Any]]) -> list[int]:
    """GPU memory sizes from every alive GPU node, by a zero-CPU Ray task pinned to each (see from_ray_nodes)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, num_gpus=0)(local_gpu_memory)
    refs = [
        probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=n["NodeID"], soft=False)).remote()
        for n in alive
        if n.get("NodeID") and float(n.get("Resources", {}).get("GPU", 0.0)) > 0
    ]
    try:
        return [size for sizes in ray.get(refs, timeout=GPU_PROBE_TIMEOUT_S) for size in sizes]
    except Exception:  # a slow or failed probe leaves GPU memory unknown rather than failing discovery
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        return []


def check_ray_address(address: str, *, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> str:
    """Resolve ``auto`` and make sure the address answers, so ``ray.init`` is never left to hang.

    Returns the address to hand to ``ray.init``. Raises :class:`ClusterError` with the fix otherwise.
    """
    if not address or not address.strip():
        raise ClusterError("empty Ray address: pass HOST:PORT of the head node, or 'auto'")
    address = address.strip()
    if address == "auto":
        resolved = os.environ.get("RAY_ADDRESS") or _current_cluster_address()
        if not resolved:
            raise ClusterError(
                "no running Ray cluster found for --ray auto: start one with 'ray start --head' "
                "or pass its address as HOST:PORT"
            )
        address = resolved
    if address.startswith("ray://"):
        hostport = address[len("ray://") :]
    else:
        hostport = address
    host, _, port_text = hostport.rpartition(":")
    if not host or not port_text.isdigit():
        raise ClusterError(f"malformed Ray address {address!r}: write HOST:PORT, e.g. 127.0.0.1:6379, or 'auto'")
    if host in ("127.0.0.1", "localhost", "::1", "[::1]"):
        # A loopback cluster (such as a local one daftscale started) is only reachable on loopback,
        # and Ray would otherwise rewrite the address to this machine's routable IP and hang.
        _loopback_only()
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ClusterError(
            f"Ray address {address} does not answer ({exc.strerror or exc}): "
            "check the head node is running ('ray status') and the address is right"
        ) from exc
    return address


def _current_cluster_address() -> str | None:
    # Ray writes the address of the last cluster started on this machine here; it may be stale,
    # which check_ray_address then reports as unreachable.
    path = os.path.join(os.environ.get("RAY_TMPDIR", "/tmp"), "ray", "ray_current_cluster")
    try:
        with open(path) as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def discover(address: str = "auto", *, timeout_s: float = RAY_CONNECT_TIMEOUT_S) -> ClusterSpec:
    """Describe a running Ray cluster from ``ray.nodes()``.

    Connects (or reuses this process's connection) and leaves the connection open, because the caller
    usually goes on to run on the same cluster.
    """
    import ray

    if ray.is_initialized():
        if address not in (None, "auto"):
            resolved = check_ray_address(address, timeout_s=timeout_s)
            current = ray.get_runtime_context().gcs_address
            if resolved.removeprefix("ray://") != current:
                raise ClusterError(
                    f"this process is already connected to the Ray cluster at {current}, not {resolved}: "
                    "use --ray auto, or run against the other cluster in a new process"
                )
    else:
        resolved = check_ray_address(address, timeout_s=timeout_s)
        try:
            ray.init(address=resolved, log_to_driver=False, logging_level="ERROR")
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
            raise ClusterError(
                f"could not join the Ray cluster at {resolved}: {exc}: check the address and that "
                "the local Ray version matches the cluster's"
            ) from exc
    return from_ray_nodes(ray.nodes())


def resolve(
    *,
    nodes: int | None = None,
    cpus_per_node: float | None = None,
    gpus_per_node: float | None = None,
    memory_per_node: str | int | None = None,
    gpu_memory_per_gpu: str | int | None = None,
    ray_address: str | None = None,
) -> ClusterSpec:
    """The cluster from whichever the user gave: declared numbers, a Ray address, or this machine.

    Declared per-node figures without ``nodes`` describe one node.
    """
    declared = [cpus_per_node, gpus_per_node, memory_per_node, gpu_memory_per_gpu]
    if ray_address is not None:
        if nodes is not None or any(v is not None for v in declared):
            raise ClusterError(
                "--ray cannot be combined with --nodes/--cpus-per-node/--gpus-per-node/--memory-per-node: "
                "use one or the other"
            )
        return discover(ray_address)
    if nodes is None and all(v is None for v in declared):
        return this_machine()
    return ClusterSpec.declared(
        nodes=1 if nodes is None else nodes,
        cpus_per_node=cpus_per_node,
        gpus_per_node=gpus_per_node,
        memory_per_node=memory_per_node,
        gpu_memory_per_gpu=gpu_memory_per_gpu,
    )


# ---------------------------------------------------------------------------------------------------
# A local multi-node Ray cluster (tests, the bench, `run --local-cluster NxC`)


def parse_local_cluster(text: str) -> tuple[int, int]:
    """Parse ``--local-cluster NxC`` (N nodes of C logical CPUs).

    >>> parse_local_cluster("4x4")
    (4, 4)
    >>> parse_local_cluster("4")
    Traceback (most recent call last):
    ...
    daftscale.errors.ClusterError: malformed --local-cluster '4': write NODESxCPUS, e.g. 2x2 or 4x4
    """
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ClusterError(f"malformed --local-cluster {text!r}: write NODESxCPUS, e.g. 2x2 or 4x4")
    nodes, cpus = (int(p) for p in parts)
    if nodes < 1 or cpus < 1:
        raise ClusterError(f"--local-cluster {text!r} needs at least 1 node of 1 CPU: e.g. 2x2")
    return nodes, cpus


def _loopback_only() -> None:
    # Ray rewrites 127.0.0.1 to this machine's routable IP unless told it is not clustering; a local
    # cluster must stay on loopback (no traffic leaves the machine, no firewall in the way). The
    # environment variable reaches the raylets and workers Ray spawns; the constant covers this process
    # when Ray was already imported.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray._private.ray_constants as ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass
class LocalCluster:
    """A multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), already connected."""

    address: str
    nodes: int
    cpus_per_node: int
    _cluster: Any

    def spec(self) -> ClusterSpec:
        import ray

        return from_ray_nodes(ray.nodes())

    def shutdown(self) -> None:
        import ray

        try:
            ray.shutdown()
        finally:
            self._cluster.shutdown()


def start_local_cluster(
    nodes: int,
    cpus_per_node: int,
    *,
    object_store_memory: int = 256 << 20,
    memory_per_node: int | None = None,
    connect: bool = True,
) -> LocalCluster:
    """Start N Ray nodes of C logical CPUs on this machine, on loopback, and connect this process.

    Always pair with :meth:`LocalCluster.shutdown` (see :func:`local_cluster`): a cluster left behind
    keeps processes alive and makes a later plain ``ray.init()`` try to join it.
    """
    require_positive_int(nodes, "nodes")
    require_positive_int(cpus_per_node, "cpus_per_node")
    _loopback_only()
    import ray
    from ray.cluster_utils import Cluster

    node_args: dict[str, Any] = {
        "num_cpus": cpus_per_node,
        "object_store_memory": object_store_memory,
        "node_ip_address": "127.0.0.1",
    }
    if memory_per_node:
        node_args["memory"] = memory_per_node
    cluster = Cluster(initialize_head=True, head_node_args=dict(node_args))
    try:
        for _ in range(nodes - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        if connect:
            ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    except BaseException:
        cluster.shutdown()
        raise
    return LocalCluster(address=cluster.address, nodes=nodes, cpus_per_node=cpus_per_node, _cluster=cluster)


class local_cluster:  # lower-case: used as a context manager, like open()
    """``with local_cluster(2, 2) as lc:`` starts a local multi-node cluster and always shuts it down."""

    def __init__(self, nodes: int, cpus_per_node: int, **options: Any) -> None:
        self._args = (nodes, cpus_per_node)
        self._options = options
        self._cluster: LocalCluster | None = None

    def __enter__(self) -> LocalCluster:
        self._cluster = start_local_cluster(*self._args, **self._options)
        return self._cluster

    def __exit__(self, *exc: object) -> None:
        if self._cluster is not None:
            self._cluster.shutdown()
