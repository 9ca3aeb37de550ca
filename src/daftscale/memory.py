"""Resident memory per node while a query runs: the samplers behind a run report's memory figures and
``--max-memory``.

Owns how memory is measured (RSS summed over a node's Daft and Ray processes, every
``MEMORY_SAMPLE_INTERVAL_S``) and how a failed measurement is kept: a sample that raises is counted as
missed, never taken as 0 bytes, and a node with no sample has an unknown peak (see
:class:`NodeMemorySampler`). Also owns :func:`host_raylets`, which tells whether a Ray cluster's nodes all
run on this host, so that a run can measure them from this process instead of from Ray actors.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from functools import partial
from typing import Any

from daftscale import faults
from daftscale.faults import InjectedFault

# Set to "actors" to measure a Ray cluster through Ray actors even when all its nodes run on this host (nodes
# in containers that share this host's process table but not its file system, say). "auto", the default,
# measures a host-local cluster from the driver: no Ray actor, so no worker process to start (see host_raylets).
RAY_INSTRUMENTS_ENV = "DAFTSCALE_RAY_INSTRUMENTS"

# How often resident memory is sampled: fine enough to catch a batch's peak (batches take tens of
# milliseconds to seconds), coarse enough that walking the process tree costs under 1 % of a core.
MEMORY_SAMPLE_INTERVAL_S = 0.2


def _tree_rss(root_pid: int, *, include_root: bool) -> int:
    """Resident bytes of a process's descendants (and itself): RSS, so shared pages count once per process.

    Raises ``psutil.Error`` when the root cannot be read (the sample is missed, never taken as 0 bytes);
    a child that exits while being read is skipped, as it holds no memory any more.
    """
    import psutil

    root = psutil.Process(root_pid)
    procs = root.children(recursive=True) + ([root] if include_root else [])
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def host_raylets() -> dict[str, int] | None:
    """The raylet process of every alive node of the connected Ray cluster, by node (the first 8 hex digits
    of its id, as UDF call records name nodes), when every one of them runs on this host; otherwise None.

    A local cluster (``ray.cluster_utils.Cluster``, ``daftscale run --local-cluster``, a bare ``ray.init()``)
    is one host. Measuring it from this process costs no Ray actor: on a 2-core, 4-node local cluster the
    collector and the four samplers' worker processes added about 1.1 s to every fresh run. A raylet
    names its node in its command line (``--node_id=<hex>``), which is how it is matched to the cluster's
    nodes. ``DAFTSCALE_RAY_INSTRUMENTS=actors`` answers None: measure through Ray actors whatever the host.
    """
    import psutil
    import ray

    if os.environ.get(RAY_INSTRUMENTS_ENV, "auto").strip().lower() == "actors":
        return None
    alive = {node["NodeID"] for node in ray.nodes() if node.get("Alive")}
    found: dict[str, int] = {}
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info.get("name") != "raylet":
            continue
        for arg in proc.info.get("cmdline") or ():
            if arg.startswith("--node_id="):
                node_id = arg.partition("=")[2]
                if node_id in alive:
                    found[node_id[:8]] = proc.pid
                break
    return found if alive and len(found) == len(alive) else None


class _Sampler:
    """A thread that keeps the peak of ``measure()`` until stopped, and counts the samples it missed.

    A sample that raises is missed, not taken as 0: :meth:`health` says how many were taken, how many
    missed and the last error, so a peak from too few samples is reported as such.
    """

    def __init__(self, measure: Any, interval_s: float = MEMORY_SAMPLE_INTERVAL_S, *, fault: bool = False) -> None:
        self._measure = measure
        self._interval = interval_s
        self._fault = fault  # DAFTSCALE_FAULTS=memory-sampler: every sample raises
        self._stop = threading.Event()
        self._active = threading.Event()
        self._active.set()
        self.peak = 0
        self.samples = 0
        self.missed = 0
        self.error = ""
        self._thread = threading.Thread(target=self._loop, name="daftscale-memory", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._active.is_set():
                # Between two runs of a session: no run to measure, so no process tree to walk.
                self._active.wait(self._interval)
                continue
            try:
                if self._fault:
                    raise InjectedFault("memory-sampler: this sample fails (DAFTSCALE_FAULTS)")
                self.peak = max(self.peak, int(self._measure()))
                self.samples += 1
            except Exception as exc:  # counted and kept: the report says the memory figure is incomplete
                self.missed += 1
                self.error = f"{type(exc).__name__}: {exc}"[:200]
            self._stop.wait(self._interval)

    def health(self) -> tuple[int, int, int, str]:
        """``(peak, samples taken, samples missed, last error)``."""
        return self.peak, self.samples, self.missed, self.error

    def restart(self, fault: bool) -> None:
        """Measure afresh (the next run of a session): the peak and the counts start again from nothing."""
        self._fault = fault
        self.peak, self.samples, self.missed, self.error = 0, 0, 0, ""
        self._active.set()

    def pause(self) -> tuple[int, int, int, str]:
        """Stop measuring until :meth:`restart`, keeping the thread: what this run measured."""
        self._active.clear()
        return self.health()

    def stop(self) -> tuple[int, int, int, str]:
        self._stop.set()
        self._active.set()  # wake a paused loop so it sees the stop
        self._thread.join(timeout=5)
        return self.health()


class NodeMemorySampler:
    """Peak resident memory per node while a query runs.

    Native runner: this process and its children (Daft's UDF actor processes), on a node named by
    the host name.
    Ray: the RSS of every process under each node's raylet (Daft's workers and UDF actors), summed by a
    thread of this process per node when ``raylets`` gives them (every node on this host, see
    :func:`host_raylets`), otherwise by one zero-CPU Ray actor pinned to each node; nodes are named by the
    first 8 hex digits of their Ray node id, as UDF call records are.

    After :meth:`stop`, :attr:`unmeasured` names each node whose peak is unknown (no sample taken, or its
    sampler did not answer) with the reason, and :attr:`missed` the samples missed per node: those figures
    are not in the peaks :meth:`stop` returns, so no node reads as 0 bytes or as a full peak it was not.
    """

    def __init__(self, runner: str, *, keep: bool = False, raylets: dict[str, int] | None = None) -> None:
        self.runner = runner
        # keep: stop() ends this run's measurement but keeps the samplers for the session's next run
        # (restart()) until close(). On Ray each sampler is an actor, and each actor costs a worker
        # process: measured 1.6-2.1 s more before a 2-actor sample run's first batch on a 2-core, 4-node local cluster.
        self.keep = keep
        self._fault = "memory-sampler" in faults.active()
        # Samplers that are threads of this process, by node: the native runner's one, or a host-local Ray
        # cluster's one per raylet.
        self._threads: dict[str, _Sampler] = {}
        self._actors: list[tuple[str, Any]] = []
        self.unmeasured: dict[str, str] = {}
        self.missed: dict[str, int] = {}
        if runner != "ray":
            # Named like the UDF call records on this runner (the host name), so the two line up.
            measure = partial(_tree_rss, os.getpid(), include_root=True)
            self._threads[socket.gethostname()] = _Sampler(measure, fault=self._fault)
        elif raylets:
            for node, raylet in raylets.items():
                self._threads[node] = _Sampler(partial(_tree_rss, raylet, include_root=False), fault=self._fault)
        else:
            self._start_missing()

    def _start_missing(self) -> None:
        """A sampler on each alive node that has none (all of them the first time; a node that joined since)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        class _NodeSampler:
            def __init__(self, interval_s: float, fault: bool) -> None:
                # A Ray actor's parent is its node's raylet: everything under it runs on this node.
                raylet = os.getppid()
                self.sampler = _Sampler(lambda: _tree_rss(raylet, include_root=False), interval_s, fault=fault)

            def health(self) -> tuple[int, int, int, str]:
                return self.sampler.health()

            def restart(self, fault: bool) -> None:
                self.sampler.restart(fault)

            def pause(self) -> tuple[int, int, int, str]:
                return self.sampler.pause()

            def stop(self) -> tuple[int, int, int, str]:
                return self.sampler.stop()

        sampled = {node for node, _ in self._actors}
        for node in ray.nodes():
            if node.get("Alive") and node["NodeID"][:8] not in sampled:
                strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
                actor = _NodeSampler.options(scheduling_strategy=strategy).remote(MEMORY_SAMPLE_INTERVAL_S, self._fault)
                self._actors.append((node["NodeID"][:8], actor))

    def restart(self) -> None:
        """Measure the session's next run: every peak and count from nothing (a sampler that keeps)."""
        self._fault = "memory-sampler" in faults.active()
        self.unmeasured, self.missed = {}, {}
        for sampler in self._threads.values():
            sampler.restart(self._fault)
        if self._threads:
            return
        # Not awaited: a later health() or stop() from this process reaches each actor after its restart.
        for _, actor in self._actors:
            actor.restart.remote(self._fault)
        self._start_missing()

    def health(self) -> dict[str, tuple[int, int, int, str]]:
        """Per node so far (while the query runs): ``(peak, samples taken, samples missed, last error)``.

        Raises when a node's sampler does not answer (Ray's error): the caller decides what that means.
        """
        if self._threads:
            return {node: sampler.health() for node, sampler in self._threads.items()}
        import ray

        answers = ray.get([actor.health.remote() for _, actor in self._actors], timeout=10)
        return {node: answer for (node, _), answer in zip(self._actors, answers, strict=True)}

    def current(self) -> dict[str, int]:
        """Peak resident bytes per node so far, for nodes with at least one sample."""
        return {node: peak for node, (peak, samples, _, _) in self.health().items() if samples}

    def stop(self) -> dict[str, int]:
        """Stop sampling (pause it, for a sampler that keeps); the peak per node that was measured (see
        :attr:`unmeasured` and :attr:`missed`)."""
        results: dict[str, tuple[int, int, int, str]] = {
            node: sampler.pause() if self.keep else sampler.stop() for node, sampler in self._threads.items()
        }
        if self._actors:
            import ray

            # A kept sampler keeps the samplers that answered; a node's silent one is replaced at restart().
            kept = []
            for node, actor in self._actors:
                try:
                    results[node] = ray.get((actor.pause if self.keep else actor.stop).remote(), timeout=30)
                except Exception as exc:  # the node's sampler died or did not answer: its peak is unknown
                    self.unmeasured[node] = f"its memory sampler did not answer ({type(exc).__name__})"
                else:
                    if self.keep:
                        kept.append((node, actor))
                        continue
                with contextlib.suppress(Exception):
                    ray.kill(actor)
            self._actors = kept
        peaks: dict[str, int] = {}
        for node, (peak, samples, missed, error) in results.items():
            if missed:
                self.missed[node] = missed
            if samples:
                peaks[node] = peak
            else:
                self.unmeasured[node] = f"no memory sample taken ({missed} missed: {error or 'no sample in time'})"
        return peaks

    def close(self) -> None:
        """End the samplers for good (those of a sampler that keeps them between runs)."""
        for sampler in self._threads.values():
            sampler.stop()
        if not self._actors:
            return
        import ray

        for _, actor in self._actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        self._actors = []


__all__ = ["MEMORY_SAMPLE_INTERVAL_S", "RAY_INSTRUMENTS_ENV", "NodeMemorySampler", "host_raylets"]
