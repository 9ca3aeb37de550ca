"""Simulate a plan: predict makespan, actor utilisation and per-node peak memory without running it.

Owns the discrete-event model of how Daft executes a :class:`~daftscale.plan.ScalingPlan` on Ray (see
``DAFT_NOTES.md``), the UDF/overhead costs it runs on (:class:`Costs`: defaults, a UDF profile, or a
calibration fitted from a run report), and the result (:class:`SimulationResult`). Pure functions; only
:func:`costs_from_report` (given a path) and :func:`plot_utilization` touch files.

The model, stage by stage:

1. start-up: query start and actor-pool start, a fixed cost (``Costs.startup_s``);
2. scan, and for ``repartition``/``into_partitions`` plans the shuffle: M scan/map tasks in waves over
   every task slot, each writing its pieces to the object store (per-object and per-byte cost), then a
   barrier; the shuffled data sits in each node's object store (spilling to disk above its size);
3. UDF stage, event by event: tasks (the partitions, or the ``into_batches`` chunks) go to the
   least-loaded node and take one of its task slots (one per CPU); a task pays ``task_overhead_s``,
   then does its pre-UDF work morsel by morsel on its node's compute threads (one per CPU, shared by the
   node's tasks; a task runs up to one morsel per CPU at once, as Daft's UDF operator does; a morsel is one
   batch of B rows, since Daft bounds the morsels upstream of a UDF by its batch size); each batch goes to
   the first free actor on its own node (remote ones when its node has none) and costs
   ``dispatch_s + seconds_per_batch + rows * seconds_per_row``; a task holds its slot until its last batch
   returns, and holds its materialised input in memory meanwhile;
4. tail: collecting the result (``Costs.tail_s``).

Memory has two verdicts, and ``oom`` is either: a node over Ray's memory threshold (tasks' inputs, calls in
flight, shuffled data), and one UDF batch over its actor's own limit (batch rows × the UDF's memory per
row, from its profile, against the declared UDF memory or a GPU UDF's GPU memory) — the second is how a
model with a memory budget fails, on its first full batch.

Approximated (each listed in ``SimulationResult.approximations`` when it applies):

- identical nodes are one class with a multiplicity: one representative node per class is simulated,
  and when it takes a task every node of its class takes one (exact for equal tasks; the last,
  partial round is timed as if every node of the class had a task);
- tasks of a stage are taken as equal-sized (partitions differ by at most one row; ``into_batches``
  chunks by their remainder), except without a shuffle when ``inputs["file_rows"]`` lists each input
  file's rows: then each task has its file's rows (or its ``into_batches`` chunk of them), and every node
  is simulated on its own (as long as the events fit the budget) so the largest file's node is seen;
- pre-UDF work on the node's compute threads takes them fully: Python that holds the GIL would not run
  in parallel;
- a batch goes to the first free actor of its node; Daft binds each of a task's in-flight slots to one
  actor (round robin), which can load some actors more than others; the calibration does not fit that
  imbalance (it is left out of the fitted costs, see :func:`costs_from_report`);
- a task with very many batches sends them in chunks of several calls (tail error under one chunk);
- above an event budget the UDF stage is simulated for two prefixes of the task queue and its span
  extrapolated linearly (steady state); busy time and rows stay exact;
- map tasks run in equal waves, the barrier is a hard one and the pre-shuffle merge is not modelled;
- the scan before ``into_batches`` is folded into each task's pre-UDF work (no separate pipeline);
- actors do not take task slots; CPU contention between tasks and actors is not modelled;
- node memory is the peak of running tasks' inputs, in-flight batches (per actor one running on its
  working memory, one queued holding its input) and actor memory, plus the node's share of shuffled data
  held in the object store at once (conservative: as if both peaked together).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.config import DEFAULT_INFLATION, format_bytes
from daftscale.errors import ConfigError, PlanError
from daftscale.plan import ScalingPlan, cluster_actor_capacity

# ---------------------------------------------------------------------------------------------------
# Defaults: used only when neither a UDF profile, a calibration nor an option gives the number, and then
# named in the output as assumptions.

# A small CPU model on one core: about 1 ms per row. A placeholder; profile the UDF or calibrate.
DEFAULT_SECONDS_PER_ROW = 1e-3

# Fixed cost of one UDF call inside the actor: DAFT_NOTES' probe measured 20 ms for a Python actor UDF.
DEFAULT_SECONDS_PER_BATCH = 0.020

# Per call outside the UDF body (Ray actor call round trip, Arrow serialisation): a few milliseconds.
DEFAULT_DISPATCH_S = 0.002

# Per Daft task on Ray (scheduling, plan serialisation, object-store puts): tens of milliseconds.
DEFAULT_TASK_OVERHEAD_S = 0.05

# Query planning and actor-pool start (one Python process per actor, imports, __init__): seconds.
DEFAULT_STARTUP_S = 5.0

# Collecting the result to the driver after the last UDF call.
DEFAULT_TAIL_S = 0.5

# Parquet decode of narrow rows runs at about 5 M rows/s per core.
DEFAULT_SCAN_SECONDS_PER_ROW = 2e-7

# Each Ray object a shuffle writes or fetches costs scheduler and metadata work: about 100 µs for the
# small pieces of a wide shuffle.
DEFAULT_SHUFFLE_SECONDS_PER_OBJECT = 1e-4

# One 10 Gbit/s network interface per node moves shuffled bytes.
DEFAULT_NETWORK_BYTES_PER_SECOND = 1.25e9

# A call to an actor on another node adds a network round trip and the batch transfer.
DEFAULT_REMOTE_CALL_S = 0.005

# Ray's memory monitor kills workers once a node uses more than 95 % of its memory
# (RAY_memory_usage_threshold), which is what an OOM looks like on Ray.
DEFAULT_MEMORY_LIMIT_FRACTION = 0.95

# Ray sizes the object store at 30 % of node memory by default; objects beyond it spill to disk.
DEFAULT_OBJECT_STORE_FRACTION = 0.30

# Task slots per node when the cluster does not say how many CPUs it has.
DEFAULT_TASK_SLOTS_PER_NODE = 8

# Bytes per scan task when the number of input files is unknown (plans made from --rows): a typical
# Parquet file written by Spark, Daft or pyarrow.
DEFAULT_SCAN_TASK_BYTES = 256 << 20

# Rows per scan task when neither files nor bytes per row are known.
DEFAULT_SCAN_TASK_ROWS = 1_000_000

# Daft's actor_udf_ready_timeout: with more actors requested than fit, it waits this long, then goes on
# with the actors that started.
ACTOR_READY_TIMEOUT_S = 120.0

# Largest number of batch events simulated for one representative node before the UDF stage is
# extrapolated from two prefixes; keeps 1,000 nodes × 10⁹ rows to seconds.
EVENT_BUDGET = 250_000

# A task with more batches than this sends them in chunks (several calls per event).
MAX_CHUNKS_PER_TASK = 512

# Calls on one actor closer together than this share of the median call are back to back: the gap
# between them is the per-call dispatch cost, not idling for want of work.
_BACK_TO_BACK_SHARE = 0.5

_TIMELINE_POINTS = 120

# The costs whose defaults are guesses about the user's workload (the rest are properties of Ray).
_ASSUMABLE = {
    "seconds_per_row": DEFAULT_SECONDS_PER_ROW,
    "seconds_per_batch": DEFAULT_SECONDS_PER_BATCH,
    "dispatch_s": DEFAULT_DISPATCH_S,
    "task_overhead_s": DEFAULT_TASK_OVERHEAD_S,
    "startup_s": DEFAULT_STARTUP_S,
    "tail_s": DEFAULT_TAIL_S,
}


# ---------------------------------------------------------------------------------------------------
# Costs


@dataclass(frozen=True)
class Costs:
    """What every piece of work costs, in seconds and bytes. Each default is a ``DEFAULT_*`` above.

    Attributes:
        seconds_per_row: UDF time per row of a batch, inside the actor.
        seconds_per_batch: UDF fixed time per call, inside the actor.
        dispatch_s: per call outside the UDF body (actor call, serialisation).
        task_overhead_s: per Daft task (scheduling, object-store traffic).
        startup_s: query start and actor-pool start, once per query.
        tail_s: after the last UDF call (collecting or writing the result).
        pre_udf_seconds_per_row: work per row inside a task before the UDF (a heavy read, decoding).
        scan_seconds_per_row: reading the input, per row.
        shuffle_seconds_per_object: per Ray object written or fetched by a shuffle.
        network_bytes_per_second: per node, for shuffled bytes and remote actor calls.
        remote_call_s: extra per call to an actor on another node.
        memory_per_row: decoded bytes per row in a task (None: the plan's bytes per row × inflation).
        udf_memory_per_row: working bytes per row of a batch in an actor (None: the plan's UDF profile, else
            ``memory_per_row``).
        actor_memory_bytes: resident memory of one actor besides its batches (the model).
        delivered_rows_per_call: mean rows per UDF call as Daft delivers them, when that is fewer than the
            plan's batch size (None: full batches of B rows). Upstream operators that emit small morsels (a
            join's probe side over many small files) hand the UDF fragments of a few rows each; Daft does not
            coalesce them up to B, so the calls, and with them the per-call cost, multiply. The simulator
            then sends each task's rows in calls of ``min(B, delivered_rows_per_call)`` rows (a mean: the
            spread of fragment sizes is not modelled). :func:`costs_from_report` fills it from a run's call
            records when they show more calls than full batches explain.
        source: where the numbers came from ("defaults", "udf profile", "calibration ...", "options").
        assumed: names of the fields left at their defaults, stated as assumptions in the output.
        notes: what calibration observed or could not observe.
    """

    seconds_per_row: float = DEFAULT_SECONDS_PER_ROW
    seconds_per_batch: float = DEFAULT_SECONDS_PER_BATCH
    dispatch_s: float = DEFAULT_DISPATCH_S
    task_overhead_s: float = DEFAULT_TASK_OVERHEAD_S
    startup_s: float = DEFAULT_STARTUP_S
    tail_s: float = DEFAULT_TAIL_S
    pre_udf_seconds_per_row: float = 0.0
    scan_seconds_per_row: float = DEFAULT_SCAN_SECONDS_PER_ROW
    shuffle_seconds_per_object: float = DEFAULT_SHUFFLE_SECONDS_PER_OBJECT
    network_bytes_per_second: float = DEFAULT_NETWORK_BYTES_PER_SECOND
    remote_call_s: float = DEFAULT_REMOTE_CALL_S
    memory_per_row: float | None = None
    udf_memory_per_row: float | None = None
    actor_memory_bytes: float = 0.0
    delivered_rows_per_call: float | None = None
    source: str = "defaults"
    assumed: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.assumed is None:
            # Left at a default, these numbers are guesses the output must own up to.
            guessed = tuple(name for name, default in _ASSUMABLE.items() if getattr(self, name) == default)
            object.__setattr__(self, "assumed", guessed)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("source", "assumed", "notes") or value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"cost {f.name} must be a finite number of 0 or more, got {value!r}")
        if self.network_bytes_per_second <= 0:
            raise ConfigError("cost network_bytes_per_second must be above 0")
        if self.delivered_rows_per_call is not None and self.delivered_rows_per_call <= 0:
            raise ConfigError(
                f"cost delivered_rows_per_call must be above 0 rows (or None for full batches), "
                f"got {self.delivered_rows_per_call!r}"
            )

    def with_udf(self, *, seconds_per_row: float | None, seconds_per_batch: float | None, source: str) -> Costs:
        """These costs with the UDF's per-row and per-call cost replaced where given (None: unchanged)."""
        changes: dict[str, Any] = {}
        if seconds_per_row is not None:
            changes["seconds_per_row"] = seconds_per_row
        if seconds_per_batch is not None:
            changes["seconds_per_batch"] = seconds_per_batch
        if not changes:
            return self
        assumed = tuple(a for a in self.assumed or () if a not in changes)
        whole = len(changes) == 2 and self.source in ("defaults", "udf profile")
        merged = source if whole or self.source == "defaults" else f"{self.source} + {source}"
        return replace(self, **changes, assumed=assumed, source=merged)

    def call_seconds(self, rows: float) -> float:
        return self.dispatch_s + self.seconds_per_batch + rows * self.seconds_per_row

    def rows_per_call(self, batch_size: int) -> float:
        """Rows one UDF call gets under a batch size of ``batch_size``: the whole batch, unless the
        delivered fragments are smaller (``delivered_rows_per_call``).

        >>> Costs().rows_per_call(64), Costs(delivered_rows_per_call=4.7).rows_per_call(64)
        (64, 4.7)
        >>> Costs(delivered_rows_per_call=100.0).rows_per_call(64)
        64
        """
        delivered = self.delivered_rows_per_call
        return batch_size if delivered is None or delivered >= batch_size else delivered

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["assumed"] = list(self.assumed or ())
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_plan(cls, plan: ScalingPlan) -> Costs:
        """Defaults, with the UDF's costs from the plan's UDF profile when it has one."""
        profile = plan.udf_profile or {}
        costs = cls()
        if profile.get("seconds_per_row") is not None or profile.get("seconds_per_batch") is not None:
            costs = costs.with_udf(
                seconds_per_row=profile.get("seconds_per_row"),
                seconds_per_batch=profile.get("seconds_per_batch"),
                source="udf profile",
            )
        if profile.get("memory_per_row_bytes"):
            costs = replace(costs, udf_memory_per_row=float(profile["memory_per_row_bytes"]))
        return costs


# ---------------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class SimulationResult:
    """A prediction for one plan on one cluster.

    ``utilization`` is defined as in the run report: summed actor busy time over actors × span of the
    UDF stage (first call to last return); ``utilization_of_makespan`` divides by the whole makespan.
    ``node_peak_memory_bytes`` has one entry per node class ({nodes, actors, tasks, peak_bytes}).
    ``oom`` is true when a node exceeds Ray's memory threshold or when one UDF batch (``udf_batch_bytes``)
    exceeds the actor's own limit (``udf_memory_bytes``: the declared UDF memory, or a GPU UDF's GPU
    memory); ``actor_oom`` tells the second case, and ``verdict`` says which and what to change.
    """

    makespan_s: float
    utilization: float
    utilization_of_makespan: float
    first_call_s: float
    peak_memory_bytes: int
    node_peak_memory_bytes: list[dict[str, Any]]
    memory_per_node: int | None
    oom: bool
    verdict: str
    bottleneck: str
    stages: dict[str, float]
    tasks: int
    batches: int
    actors: int
    busy_s: float
    spilled_bytes: int
    timeline: list[tuple[float, float]]
    approximations: list[str]
    assumptions: list[str]
    costs: dict[str, Any]
    actor_oom: bool = False
    udf_batch_bytes: int = 0
    udf_memory_bytes: int | None = None
    plan: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timeline"] = [[round(t, 6), round(u, 6)] for t, u in self.timeline]
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def prediction(self) -> dict[str, Any]:
        """The summary a plan carries in ``ScalingPlan.predicted``."""
        return {
            "makespan_s": round(self.makespan_s, 3),
            "utilization": round(self.utilization, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
            "oom": self.oom,
            "actor_oom": self.actor_oom,
            "bottleneck": self.bottleneck,
            "costs_source": self.costs.get("source"),
            "assumptions": list(self.assumptions),
        }

    def describe(self) -> str:
        """Plain-text summary: the headline numbers, stages, memory per node class, what was assumed."""
        lines = [
            f"makespan: {self.makespan_s:,.2f} s",
            f"utilization: {self.utilization:.1%} of {self.actors} actors over the UDF stage "
            f"({self.utilization_of_makespan:.1%} over the whole run)",
            "stages: " + ", ".join(f"{name} {seconds:,.2f} s" for name, seconds in self.stages.items()),
            f"work: {self.tasks:,} tasks, {self.batches:,} UDF calls, {self.busy_s:,.1f} actor-seconds busy",
            f"peak memory: {format_bytes(self.peak_memory_bytes)} on the busiest node"
            + (f" of {format_bytes(self.memory_per_node)}" if self.memory_per_node else ""),
        ]
        for node in self.node_peak_memory_bytes:
            lines.append(
                f"  {node['nodes']} node(s) with {node['actors']} actors: peak {format_bytes(node['peak_bytes'])}"
            )
        lines.append(f"bottleneck: {self.bottleneck}")
        lines.append(f"{'OOM' if self.oom else 'memory'}: {self.verdict}")
        if self.assumptions:
            lines.append("assumptions:")
            lines += [f"  - {a}" for a in self.assumptions]
        if self.approximations:
            lines.append("approximations:")
            lines += [f"  - {a}" for a in self.approximations]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# The UDF stage: representative nodes, events


@dataclass
class _NodeClass:
    count: int  # identical nodes this representative stands for
    slots: int  # task slots, one per CPU; also the compute threads its tasks' pre-UDF work shares
    actors: int
    remote_s: float = 0.0  # mean extra per call for calls that go to another node
    # Morsels one task works on at once before the UDF: Daft's UDF operator runs as many as the worker
    # has compute threads (one per CPU of its node; see udf.rs get_optimal_allocation).
    task_threads: int = 1
    free_slots: int = 0
    actor_free: list[float] = field(default_factory=list)
    thread_free: list[float] = field(default_factory=list)
    running_bytes: float = 0.0
    peak_bytes: float = 0.0
    tasks: float = 0.0  # real tasks run by the nodes of this class, summed


@dataclass
class _Stage:
    """The UDF stage's inputs: equal tasks, how their batches cost, how much memory they hold."""

    tasks: int
    rows: int
    batch_size: int
    overhead_s: float  # per task, before its first row
    pre_s_per_row: float  # per row inside the task before the UDF
    mem_per_row: float  # resident bytes per row of a running task's input
    udf_mem_per_row: float  # working bytes per row of a batch inside an actor
    materialised: bool  # the task's whole input is in memory (else a streaming window)
    sizes: list[int] | None = None  # rows of each task in queue order, when known (else equal tasks)

    def task_rows(self, start: int, count: int) -> float:
        """Mean rows of tasks ``start .. start+count-1`` (the first ``rows % tasks`` get one more)."""
        if self.sizes:
            part = self.sizes[start : start + count]
            return sum(part) / max(1, len(part))
        base, extra = divmod(self.rows, self.tasks)
        bonus = max(0, min(extra, start + count) - start)
        return base + bonus / count


@dataclass
class _StageRun:
    first_start: float
    end: float
    intervals: list[tuple[float, float, float]]
    classes: list[_NodeClass]


def _call_count(rows: float, call_rows: float) -> int:
    """UDF calls for ``rows`` rows at ``call_rows`` rows per call (at least one; a float call size is a
    mean of delivered fragments, so a hair over a whole number of calls is not one more call)."""
    return max(1, math.ceil(rows / call_rows - 1e-9))


def _chunks(rows: int, call_rows: float) -> list[tuple[int, int]]:
    """(calls, rows) per event for one task: one call per event, or several when the task has very many.

    ``call_rows`` is the batch size B (full batches, then the remainder) or, when Daft delivers fragments,
    their mean size (the task's rows spread evenly over its calls)."""
    calls = _call_count(rows, call_rows)
    full_batches = float(call_rows).is_integer()
    if calls <= MAX_CHUNKS_PER_TASK:
        if full_batches:
            size = int(call_rows)
            return [*([(1, size)] * (calls - 1)), (1, rows - size * (calls - 1))]
        base, extra = divmod(rows, calls)
        return [(1, base + 1)] * extra + [(1, base)] * (calls - extra)
    per = math.ceil(calls / MAX_CHUNKS_PER_TASK)
    out: list[tuple[int, int]] = []
    left_calls, left_rows = calls, rows
    while left_calls > 0:
        c = min(per, left_calls)
        r = min(left_rows, math.ceil(c * call_rows)) if full_batches else round(left_rows * c / left_calls)
        out.append((c, r))
        left_calls -= c
        left_rows -= r
    return out


class _Task:
    """One running task (or ``weight`` identical ones, one per node of a class) in the UDF stage."""

    __slots__ = ("armed", "chunks", "ends", "held", "issued", "last", "morsels", "prepared", "rows", "sent", "weight")

    def __init__(
        self, plan: tuple[list[tuple[int, int]], list[int], list[int]], now: float, weight: float, held: float
    ) -> None:
        self.chunks, self.ends, self.morsels = plan  # (calls, rows) per send, rows sent after each, morsel rows
        self.rows = self.ends[-1]
        self.issued = 0  # morsels handed to a compute thread
        self.prepared = 0  # rows through the pre-UDF work
        self.sent = 0  # chunks sent to actors
        self.armed = False  # a send event is queued
        self.last = now  # when the last call sent so far returns
        self.weight = weight
        self.held = held

    def can_send(self) -> bool:
        return self.sent < len(self.chunks) and (self.prepared >= self.rows or self.ends[self.sent] <= self.prepared)


def _run_stage(
    classes: list[_NodeClass], stage: _Stage, costs: Costs, t0: float, *, task_limit: int | None = None
) -> _StageRun:
    """Event-driven UDF stage over representative nodes; tasks pulled from one queue, least-loaded first.

    A task does its pre-UDF work morsel (batch) by morsel on the node's compute threads, up to
    ``task_threads`` morsels at a time, first come first served among the node's tasks; a batch goes to the
    first free actor once its morsel is through.
    """
    total_tasks = stage.tasks if task_limit is None else min(task_limit, stage.tasks)
    for c in classes:
        c.free_slots = c.slots
        c.actor_free = [t0] * c.actors
        heapq.heapify(c.actor_free)
        c.thread_free = [t0] * c.slots
        c.running_bytes = c.peak_bytes = c.tasks = 0.0
    # Two calls in flight per actor: one running on its working memory, one queued holding its input.
    per_actor = stage.batch_size * (stage.udf_mem_per_row + stage.mem_per_row) + costs.actor_memory_bytes
    inflight_bytes = [c.actors * per_actor for c in classes]
    next_task = 0
    seq = 0
    # (time, seq, kind, class, task): kind 0 the task sends its next batch, 1 its last call returned,
    # 2 it is through its overhead and starts on its rows, 3 one of its morsels is through the pre-UDF work.
    events: list[tuple[float, int, int, int, _Task, int]] = []  # ..., rows of a morsel (kind 3)
    intervals: list[tuple[float, float, float]] = []
    first_start = math.inf
    end = t0
    plans: dict[int, tuple[list[tuple[int, int]], list[int], list[int]]] = {}
    spr, fixed = costs.seconds_per_row, costs.dispatch_s + costs.seconds_per_batch
    pre = stage.pre_s_per_row

    def push(when: float, kind: int, ci: int, task: _Task, rows: int = 0) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, kind, ci, task, rows))

    def task_plan(rows: int) -> tuple[list[tuple[int, int]], list[int], list[int]]:
        found = plans.get(rows)
        if found is None:
            chunks = _chunks(rows, costs.rows_per_call(stage.batch_size))
            ends = list(itertools.accumulate(r for _, r in chunks))
            # Daft propagates the UDF's strict batch size upstream as the operators' morsel bound
            # (pipeline.rs combine_requirements): the pre-UDF work runs on morsels of one batch.
            found = plans[rows] = (chunks, ends, [r for _, r in chunks])
        return found

    def start_task(ci: int, now: float) -> bool:
        nonlocal next_task
        c = classes[ci]
        if next_task >= total_tasks or c.free_slots <= 0:
            return False
        take = min(c.count, total_tasks - next_task)
        mean_rows = stage.task_rows(next_task, take)
        next_task += take
        rows = max(1, round(mean_rows))
        c.free_slots -= 1
        c.tasks += take
        held = stage.mem_per_row * (rows if stage.materialised else min(rows, 2 * max(1, c.actors) * stage.batch_size))
        c.running_bytes += held
        c.peak_bytes = max(c.peak_bytes, c.running_bytes)
        push(now + stage.overhead_s, 2, ci, _Task(task_plan(rows), now, take, held))
        return True

    def prepare(ci: int, task: _Task, now: float) -> None:
        """The task's next morsel on the node's earliest free compute thread."""
        rows = task.morsels[task.issued]
        task.issued += 1
        threads = classes[ci].thread_free
        done = max(heapq.heappop(threads), now) + rows * pre
        heapq.heappush(threads, done)
        push(done, 3, ci, task, rows)

    def arm(ci: int, task: _Task, now: float) -> None:
        # One send event per task at a time: the tasks of a node take turns at the actors.
        if not task.armed and task.can_send():
            task.armed = True
            push(now, 0, ci, task)

    # Initial placement: least-loaded means round-robin over nodes, one slot at a time.
    for _ in range(max(c.slots for c in classes)):
        for ci in range(len(classes)):
            start_task(ci, t0)

    while events:
        now, _, kind, ci, task, morsel = heapq.heappop(events)
        c = classes[ci]
        if kind == 1:  # task done: free its slot, take the next task
            c.free_slots += 1
            c.running_bytes -= task.held
            end = max(end, now)
            start_task(ci, now)
            continue
        if kind == 2:  # through its overhead: start on as many morsels as the task may run at once
            if pre > 0:
                for _ in range(min(c.task_threads, len(task.morsels))):
                    prepare(ci, task, now)
            else:
                task.prepared = task.rows
                arm(ci, task, now)
            continue
        if kind == 3:  # a morsel is through: its thread takes the task's next one
            task.prepared += morsel
            if task.issued < len(task.morsels):
                prepare(ci, task, now)
            arm(ci, task, now)
            continue
        task.armed = False
        calls, rows = task.chunks[task.sent]
        task.sent += 1
        free = heapq.heappop(c.actor_free)
        begin = max(now, free)
        finish = begin + calls * (fixed + c.remote_s) + rows * spr
        heapq.heappush(c.actor_free, finish)
        first_start = min(first_start, begin)
        intervals.append((begin, finish, task.weight))
        task.last = max(task.last, finish)
        if task.sent == len(task.chunks):
            push(task.last, 1, ci, task)
        else:
            arm(ci, task, now)
    for c, extra in zip(classes, inflight_bytes, strict=True):
        c.peak_bytes += extra
    return _StageRun(
        first_start=t0 if first_start == math.inf else first_start, end=end, intervals=intervals, classes=classes
    )


def _node_classes(
    nodes: int, slots: int, actors: int, costs: Costs, batch_bytes: float
) -> tuple[list[_NodeClass], str | None]:
    """Nodes grouped by how many actors Daft spreads onto them; pooled when some nodes have none."""
    if actors < nodes:
        # Tasks on nodes without actors send their batches to remote ones, which couples the nodes:
        # simulate the cluster as one pool of every slot and actor, remote calls paying the network.
        remote_share = (nodes - actors) / nodes
        remote_s = remote_share * (costs.remote_call_s + batch_bytes / costs.network_bytes_per_second)
        pooled = _NodeClass(count=1, slots=slots * nodes, actors=actors, remote_s=remote_s, task_threads=slots)
        return [pooled], (
            f"{nodes - actors} of {nodes} nodes have no actor: the cluster is simulated as one pool of "
            f"{slots * nodes} slots and {actors} actors, {remote_share:.0%} of calls paying a remote hop"
        )
    low, high_nodes = divmod(actors, nodes)
    classes = []
    if high_nodes:
        classes.append(_NodeClass(count=high_nodes, slots=slots, actors=low + 1, task_threads=slots))
    if nodes - high_nodes:
        classes.append(_NodeClass(count=nodes - high_nodes, slots=slots, actors=low, task_threads=slots))
    return classes, None


# ---------------------------------------------------------------------------------------------------
# simulate()


def simulate(
    plan: ScalingPlan,
    cluster: ClusterSpec | None = None,
    *,
    costs: Costs | None = None,
    calibration: str | os.PathLike[str] | dict[str, Any] | None = None,
) -> SimulationResult:
    """Predict makespan, utilisation and peak memory of ``plan`` on ``cluster`` (default: the plan's own).

    Costs: ``costs`` if given, else fitted from ``calibration`` (a run report or its path), else the plan's
    UDF profile, else the ``DEFAULT_*`` values (named in ``assumptions``). The plan's numbers are kept
    as they are on another cluster, so ``simulate(plan, ClusterSpec(nodes=1000))`` answers "this plan on
    1,000 nodes".

    Examples:
        >>> from daftscale import ClusterSpec, plan, profile_numbers
        >>> p = plan(profile_numbers(1_000_000, 100), ClusterSpec(nodes=4, cpus_per_node=4),
        ...          concurrency=16, batch_size=64)
        >>> r = simulate(p, costs=Costs(seconds_per_row=5e-4, seconds_per_batch=0.02))
        >>> 0.9 < r.utilization <= 1.0, r.oom
        (True, False)
    """
    if not isinstance(plan, ScalingPlan):
        raise PlanError("simulate() needs a ScalingPlan: make one with daftscale.plan() or ScalingPlan.from_json()")
    cluster = cluster or ClusterSpec.from_dict(plan.cluster)
    if costs is None:
        costs = resolve_costs(plan, calibration=calibration)
    return _simulate(plan, cluster, costs)


def resolve_costs(
    plan: ScalingPlan,
    *,
    calibration: str | os.PathLike[str] | dict[str, Any] | None = None,
    seconds_per_row: float | None = None,
    seconds_per_batch: float | None = None,
) -> Costs:
    """The costs to simulate ``plan`` with: a calibration, else the plan's UDF profile, else defaults;
    then the UDF's per-row and per-call cost where given (options win over both).

    >>> from daftscale import ClusterSpec, plan, profile_numbers
    >>> p = plan(profile_numbers(1000, 100), ClusterSpec(nodes=1), concurrency=1)
    >>> c = resolve_costs(p, seconds_per_row=0.002)
    >>> c.seconds_per_row, c.source, "seconds_per_row" in c.assumed
    (0.002, 'options', False)
    """
    for value, name in ((seconds_per_row, "udf_seconds_per_row"), (seconds_per_batch, "udf_seconds_per_batch")):
        if value is not None and (not math.isfinite(value) or value < 0):
            raise ConfigError(f"--{name.replace('_', '-')} must be 0 or more seconds, got {value!r}")
    base = costs_from_report(calibration) if calibration is not None else Costs.from_plan(plan)
    return base.with_udf(seconds_per_row=seconds_per_row, seconds_per_batch=seconds_per_batch, source="options")


def _simulate(plan: ScalingPlan, cluster: ClusterSpec, costs: Costs) -> SimulationResult:
    inputs = plan.inputs or {}
    rows = int(inputs.get("rows") or 0)
    if rows < 1:
        raise PlanError("the plan has no row count (inputs.rows): make it again with 'daftscale plan'")
    nodes = cluster.nodes
    approximations: list[str] = []
    assumptions: list[str] = [
        f"{name} = {getattr(costs, name):g} (default, not measured)" for name in costs.assumed or ()
    ]
    slots = int(cluster.cpus_per_node) if cluster.cpus_per_node else DEFAULT_TASK_SLOTS_PER_NODE
    if not cluster.cpus_per_node:
        assumptions.append(f"{slots} task slots per node (the cluster does not say how many CPUs)")
    bytes_per_row = float(inputs.get("bytes_per_row") or 0.0)
    inflation = float(inputs.get("inflation") or DEFAULT_INFLATION)
    mem_per_row = costs.memory_per_row if costs.memory_per_row is not None else bytes_per_row * inflation
    batch = int(plan.batch_size)
    # Rows per UDF call: the batch size, or the smaller fragments Daft delivers (Costs.delivered_rows_per_call).
    call_rows = costs.rows_per_call(batch)
    if call_rows < batch:
        approximations.append(
            f"UDF calls of {call_rows:g} rows on average, not full batches of {batch:,}: the fragments Daft "
            "delivers (measured in a run); their spread is not modelled"
        )

    # Actors: the plan's concurrency, unless the cluster cannot schedule it (Daft waits, then goes on).
    actors = int(plan.concurrency)
    startup = costs.startup_s
    capacity = cluster_actor_capacity(cluster, plan.udf_cpus, plan.udf_gpus)
    if capacity is not None and actors > capacity:
        if capacity < 1:
            raise PlanError(
                f"the plan's UDF needs {plan.udf_gpus:g} GPU per actor but this cluster has "
                f"{cluster.gpus_per_node:g} per node: simulate on a cluster with GPUs (--gpus-per-node)"
            )
        assumptions.append(
            f"{actors} actors do not fit this cluster ({capacity} do): Daft waits {ACTOR_READY_TIMEOUT_S:.0f} s "
            f"for them, then runs with {capacity}"
        )
        actors = capacity
        startup += ACTOR_READY_TIMEOUT_S

    # Scan and shuffle (closed form: equal map tasks in waves over every slot, then a barrier).
    files = int(inputs.get("files") or 0)
    total_bytes = rows * bytes_per_row
    if files:
        scan_tasks = files
    else:
        scan_tasks = (
            max(1, math.ceil(total_bytes / DEFAULT_SCAN_TASK_BYTES))
            if total_bytes
            else max(1, math.ceil(rows / DEFAULT_SCAN_TASK_ROWS))
        )
        assumptions.append(f"{scan_tasks:,} scan task(s): input files unknown, taken as about 256 MiB each")
    scan_tasks = min(scan_tasks, rows)
    shuffle_s = 0.0
    shuffle_store_per_node = 0.0
    pre_per_row = costs.pre_udf_seconds_per_row
    partition_op = plan.partition_op if plan.partitions else None
    materialised = False
    fetch_per_task = 0.0
    if partition_op:
        parts = min(int(plan.partitions or 1), rows)
        pieces = parts if partition_op == "repartition" else max(1, math.ceil(parts / scan_tasks))
        map_rows = rows / scan_tasks
        map_bytes = map_rows * bytes_per_row
        map_task_s = (
            costs.task_overhead_s
            + map_rows * costs.scan_seconds_per_row
            + pieces * costs.shuffle_seconds_per_object
            + map_bytes / costs.network_bytes_per_second
        )
        waves = math.ceil(scan_tasks / (nodes * slots))
        shuffle_s = waves * map_task_s
        shuffle_store_per_node = rows * mem_per_row / min(nodes, scan_tasks) if mem_per_row else 0.0
        if partition_op == "repartition":
            fetch_per_task = scan_tasks * costs.shuffle_seconds_per_object
            fetch_per_task += (rows / parts) * bytes_per_row / costs.network_bytes_per_second
        materialised = True
        approximations.append(
            f"shuffle: {scan_tasks:,} map task(s) × {pieces:,} piece(s) in {waves:,} wave(s), hard barrier; "
            "Daft's pre-shuffle merge is not modelled"
        )
        udf_tasks_base = parts
    else:
        parts = scan_tasks
        pre_per_row += costs.scan_seconds_per_row
        udf_tasks_base = scan_tasks
        if plan.strategy == "streaming" and plan.partition_bytes_target and total_bytes:
            udf_tasks_base = max(scan_tasks, math.ceil(total_bytes / plan.partition_bytes_target))
    if plan.into_batches:
        per_part = rows / udf_tasks_base
        tasks = udf_tasks_base * max(1, math.ceil(per_part / plan.into_batches))
        materialised = True
        if plan.into_batches % batch:
            approximations.append("into_batches chunks taken as equal-sized tasks")
        if not partition_op:
            approximations.append("the scan before into_batches is folded into each task's pre-UDF work")
    else:
        tasks = udf_tasks_base
    tasks = max(1, min(tasks, rows))
    # Rows per input file, when the inputs list them: without a shuffle, tasks follow the files.
    sizes: list[int] | None = None
    file_rows = [int(r) for r in inputs.get("file_rows") or [] if int(r) > 0]
    if not partition_op and len(file_rows) == scan_tasks == udf_tasks_base and sum(file_rows) == rows:
        if plan.into_batches:
            step = int(plan.into_batches)
            sizes = [min(step, f - k) for f in file_rows for k in range(0, f, step)]
        else:
            sizes = file_rows
        tasks = len(sizes)
        approximations.append(f"{tasks:,} tasks of the input files' own sizes ({min(sizes):,} to {max(sizes):,} rows)")

    batch_bytes = batch * bytes_per_row
    classes, pooled = _node_classes(nodes, slots, actors, costs, batch_bytes)
    if pooled:
        approximations.append(pooled)
    if sizes and len(set(sizes)) > 1 and any(c.count > 1 for c in classes):
        # A class's nodes would each take the mean of the next tasks' rows, losing what uneven files are
        # about (the largest file's node finishes last): simulate every node when the events allow.
        chunk_events = sum(_call_count(size, call_rows) for size in sizes)
        if chunk_events <= EVENT_BUDGET:
            classes = [replace(c, count=1) for c in classes for _ in range(c.count)]
    if pre_per_row > 0 and tasks < nodes * slots:
        approximations.append(
            "pre-UDF work of a task runs on up to one morsel (batch) per CPU of its node at once, as Daft's UDF "
            "operator does (Python work that holds the GIL would not)"
        )
    udf_mem_per_row = _udf_memory_per_row(plan, costs, mem_per_row)
    stage = _Stage(
        tasks=tasks,
        rows=rows,
        batch_size=batch,
        overhead_s=costs.task_overhead_s + fetch_per_task,
        pre_s_per_row=pre_per_row,
        mem_per_row=mem_per_row,
        udf_mem_per_row=udf_mem_per_row,
        materialised=materialised,
        sizes=sizes,
    )
    t0 = startup + shuffle_s
    per_task_chunks = len(_chunks(max(1, rows // tasks), call_rows))
    if per_task_chunks < _call_count(rows / tasks, call_rows):
        approximations.append(f"tasks send their batches in {per_task_chunks} chunks each (several calls per event)")
    reps = len(classes)
    counted = sum(c.count for c in classes)
    events = tasks * per_task_chunks * reps / counted
    if events <= EVENT_BUDGET:
        run = _run_stage(classes, stage, costs, t0)
        span_scale = 1.0
        udf_end = run.end
    else:
        # Steady state: the stage's span grows linearly with tasks once every slot has cycled, so two
        # prefixes of the queue give the slope.
        unit = counted
        t2 = max(2 * unit, int(EVENT_BUDGET * counted / (per_task_chunks * reps)) // unit * unit)
        t1 = max(unit, t2 // 2 // unit * unit)
        first = _run_stage([replace(c) for c in classes], stage, costs, t0, task_limit=t1)
        run = _run_stage(classes, stage, costs, t0, task_limit=t2)
        slope = (run.end - first.end) / (t2 - t1)
        udf_end = run.end + slope * (tasks - t2)
        span_scale = (udf_end - run.first_start) / max(run.end - run.first_start, 1e-12)
        approximations.append(
            f"UDF stage simulated for the first {t1:,} and {t2:,} of {tasks:,} tasks and extrapolated "
            "linearly (steady state); busy time and rows are exact"
        )
    if any(c.count > 1 for c in classes):
        approximations.append(
            "identical nodes simulated once per class with a multiplicity ("
            + ", ".join(f"{c.count}×{c.actors} actors" for c in classes)
            + ")"
        )

    # Busy time, exact: every task's calls and rows.
    base, extra = divmod(rows, tasks)
    calls = extra * _call_count(base + 1, call_rows) + (tasks - extra) * _call_count(base, call_rows) if base else extra
    if sizes:
        calls = sum(_call_count(size, call_rows) for size in sizes)
    remote_total = sum(c.remote_s for c in classes) / reps * calls
    busy = calls * (costs.dispatch_s + costs.seconds_per_batch) + rows * costs.seconds_per_row + remote_total
    udf_span = max(udf_end - run.first_start, 1e-12)
    makespan = udf_end + costs.tail_s
    utilization = min(1.0, busy / (actors * udf_span))
    utilization_all = min(1.0, busy / (actors * makespan)) if makespan > 0 else 0.0

    # Memory per node class.
    store_capacity = (cluster.memory_per_node or 0) * DEFAULT_OBJECT_STORE_FRACTION
    store_used = min(shuffle_store_per_node, store_capacity) if cluster.memory_per_node else shuffle_store_per_node
    spilled = max(0.0, shuffle_store_per_node - store_used) * min(nodes, scan_tasks) if partition_op else 0.0
    node_peaks = [
        {
            "nodes": c.count,
            "actors": c.actors,
            "tasks": round(c.tasks / c.count, 2),
            "peak_bytes": int(c.peak_bytes + store_used),
        }
        for c in run.classes
    ]
    peak = max(n["peak_bytes"] for n in node_peaks)
    if mem_per_row == 0:
        assumptions.append("bytes per row unknown: task memory not counted (pass --bytes-per-row)")
    memory = cluster.memory_per_node
    if memory:
        limit = memory * DEFAULT_MEMORY_LIMIT_FRACTION
        oom = peak > limit
        if oom:
            verdict = (
                f"a node needs {format_bytes(peak)} but Ray kills workers above "
                f"{DEFAULT_MEMORY_LIMIT_FRACTION:.0%} of its {format_bytes(memory)}: use more, smaller "
                f"partitions (fewer rows per task), fewer actors per node, or nodes with more memory"
            )
        else:
            verdict = f"fits: peak {format_bytes(peak)} is {peak / memory:.0%} of a node's {format_bytes(memory)}"
    else:
        oom = False
        verdict = f"unknown: peak {format_bytes(peak)} per node, but node memory is not declared (--memory-per-node)"
    if spilled:
        verdict += f"; {format_bytes(spilled)} of shuffled data spills to disk (object store full)"

    # One actor: a call holds its whole batch at once, and the batch is at most its task's rows.
    largest_batch = min(batch, max(sizes) if sizes else math.ceil(rows / tasks))
    udf_batch_bytes = largest_batch * udf_mem_per_row
    udf_budget, udf_budget_why = _udf_memory_budget(plan, cluster)
    actor_oom = bool(udf_budget and udf_batch_bytes > udf_budget)
    if actor_oom:
        assert udf_budget is not None
        fits = int(udf_budget // udf_mem_per_row)
        actor_verdict = (
            f"a UDF batch of {largest_batch:,} rows × {format_bytes(udf_mem_per_row)} needs "
            f"{format_bytes(udf_batch_bytes)} in one actor, over its {format_bytes(udf_budget)} ({udf_budget_why}): "
            f"the UDF runs out of memory on its first full batch; use a batch of at most {fits:,} rows "
            "or give the actors more memory"
        )
        verdict = actor_verdict + ("; and " + verdict if oom else "")
        oom = True
    elif udf_budget and udf_mem_per_row:
        verdict += (
            f"; a UDF batch of {largest_batch:,} rows needs {format_bytes(udf_batch_bytes)} of the actor's "
            f"{format_bytes(udf_budget)} ({udf_budget_why})"
        )

    stages = {
        "startup": round(startup, 6),
        "shuffle": round(shuffle_s, 6),
        "udf": round(udf_end - t0, 6),
        "tail": round(costs.tail_s, 6),
    }
    bottleneck = _bottleneck(
        makespan=makespan,
        stages=stages,
        utilization=utilization,
        tasks=tasks,
        nodes=nodes,
        slots=slots,
        actors=actors,
        calls=calls,
        busy=busy,
        costs=costs,
        pre_per_row=pre_per_row,
        rows=rows,
        call_rows=call_rows,
        batch=batch,
    )
    timeline = _timeline(
        run.intervals, t0=t0, scale=span_scale, first=run.first_start, makespan=makespan, actors=actors
    )
    return SimulationResult(
        makespan_s=makespan,
        utilization=utilization,
        utilization_of_makespan=utilization_all,
        first_call_s=run.first_start,
        peak_memory_bytes=int(peak),
        node_peak_memory_bytes=node_peaks,
        memory_per_node=memory,
        oom=oom,
        verdict=verdict,
        bottleneck=bottleneck,
        stages=stages,
        tasks=tasks,
        batches=calls,
        actors=actors,
        busy_s=busy,
        spilled_bytes=int(spilled),
        timeline=timeline,
        approximations=approximations,
        assumptions=assumptions,
        costs=costs.to_dict(),
        actor_oom=actor_oom,
        udf_batch_bytes=int(udf_batch_bytes),
        udf_memory_bytes=udf_budget,
        plan={
            "strategy": plan.strategy,
            "partitions": plan.partitions,
            "into_batches": plan.into_batches,
            "batch_size": plan.batch_size,
            "concurrency": plan.concurrency,
            "nodes": nodes,
        },
    )


def _udf_memory_per_row(plan: ScalingPlan, costs: Costs, mem_per_row: float) -> float:
    """Working bytes per row of a UDF batch: the costs' figure, else the plan's UDF profile (what the
    planner sized the batch with), else the task's decoded bytes per row."""
    if costs.udf_memory_per_row is not None:
        return costs.udf_memory_per_row
    profiled = (plan.udf_profile or {}).get("memory_per_row_bytes")
    return float(profiled) if profiled else mem_per_row


def _udf_memory_budget(plan: ScalingPlan, cluster: ClusterSpec) -> tuple[int | None, str]:
    """A hard per-actor memory limit, if the plan or the cluster gives one: the declared UDF memory, else
    a GPU UDF's share of GPU memory. A CPU actor without a declared budget shares its node's memory,
    which the node verdict covers."""
    declared = (plan.inputs or {}).get("udf_memory")
    if declared:
        return int(declared), f"--udf-memory {format_bytes(int(declared))}"
    if plan.udf_gpus > 0 and cluster.gpu_memory_per_gpu:
        budget = int(cluster.gpu_memory_per_gpu * plan.udf_gpus)
        return budget, f"{plan.udf_gpus:g} × {format_bytes(cluster.gpu_memory_per_gpu)} GPU memory"
    return None, "none declared"


def _bottleneck(
    *,
    makespan: float,
    stages: dict[str, float],
    utilization: float,
    tasks: int,
    nodes: int,
    slots: int,
    actors: int,
    calls: int,
    busy: float,
    costs: Costs,
    pre_per_row: float,
    rows: int,
    call_rows: float,
    batch: int,
) -> str:
    fixed = stages["startup"] + stages["tail"]
    if fixed > 0.5 * makespan:
        return f"fixed costs: start-up and tail take {fixed:,.1f} s of {makespan:,.1f} s; the UDF work is small"
    if stages["shuffle"] > 0.4 * makespan:
        return (
            f"shuffle: {stages['shuffle']:,.1f} s of {makespan:,.1f} s materialising the repartition; "
            "use more input files or into_partitions"
        )
    if tasks < nodes:
        return f"too few tasks: {tasks} task(s) reach only {tasks} of {nodes} nodes, the other nodes' actors idle"
    overhead_share = calls * (costs.dispatch_s + costs.seconds_per_batch) / busy if busy else 0.0
    if utilization >= 0.8:
        if overhead_share > 0.25 and call_rows < batch:
            return (
                f"UDF per-call overhead: fixed cost is {overhead_share:.0%} of actor time, calls of {call_rows:g} "
                f"rows where the batch size is {batch:,} (Daft delivers fragments): regroup the rows before the "
                "UDF (into_batches or into_partitions), a larger batch size alone does not help"
            )
        if overhead_share > 0.25:
            return f"UDF per-call overhead: fixed cost is {overhead_share:.0%} of actor time; raise the batch size"
        return f"UDF compute: actors {utilization:.0%} busy; add actors (nodes) to go faster"
    feed_s = rows * pre_per_row / (nodes * slots) + tasks * costs.task_overhead_s / (nodes * slots)
    if feed_s > 0.5 * stages["udf"]:
        return (
            f"feeding the actors: pre-UDF work and task overhead take {feed_s:,.1f} s per slot, actors "
            f"{utilization:.0%} busy; more CPUs per node or fewer, larger tasks"
        )
    if tasks < nodes * max(1, actors // nodes) or tasks < 2 * nodes:
        return f"too few tasks: {tasks:,} tasks for {actors} actors leave actors idle ({utilization:.0%} busy)"
    return (
        f"imbalance and tail: actors {utilization:.0%} busy, idle while the last tasks finish; more, smaller partitions"
    )


def _timeline(
    intervals: list[tuple[float, float, float]], *, t0: float, scale: float, first: float, makespan: float, actors: int
) -> list[tuple[float, float]]:
    """Busy actors over all actors, averaged over equal time bins from 0 to the makespan."""
    if makespan <= 0 or not intervals:
        return [(0.0, 0.0), (makespan, 0.0)]
    import numpy as np

    data = np.asarray(intervals, dtype=float)
    starts = first + (data[:, 0] - first) * scale
    ends = first + (data[:, 1] - first) * scale
    weights = data[:, 2]
    edges = np.linspace(0.0, makespan, _TIMELINE_POINTS + 1)
    # Integral of busy actors up to each edge: sum of each interval's overlap with [0, edge].
    busy = np.zeros_like(edges)
    order_s = np.argsort(starts)
    order_e = np.argsort(ends)
    s_sorted, sw = starts[order_s], weights[order_s]
    e_sorted, ew = ends[order_e], weights[order_e]
    cs_w, cs_sw = np.concatenate([[0], np.cumsum(sw)]), np.concatenate([[0], np.cumsum(sw * s_sorted)])
    ce_w, ce_ew = np.concatenate([[0], np.cumsum(ew)]), np.concatenate([[0], np.cumsum(ew * e_sorted)])
    for i, edge in enumerate(edges):
        k = np.searchsorted(s_sorted, edge, side="right")
        j = np.searchsorted(e_sorted, edge, side="right")
        started = edge * cs_w[k] - cs_sw[k]  # ∫ for intervals begun before edge, as if still running
        ended = edge * ce_w[j] - ce_ew[j]  # minus the part after their end
        busy[i] = started - ended
    per_bin = np.diff(busy) / np.diff(edges) / max(actors, 1)
    mids = (edges[:-1] + edges[1:]) / 2
    return [(float(t), float(min(1.0, max(0.0, u)))) for t, u in zip(mids, per_bin, strict=True)]


# ---------------------------------------------------------------------------------------------------
# Calibration from a run report


def _load_report(report: str | os.PathLike[str] | dict[str, Any]) -> tuple[dict[str, Any], str]:
    if isinstance(report, dict):
        return report, "calibration report"
    path = Path(report)
    if path.is_dir():
        path = path / "report.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"calibration report {path} not found: pass the report.json written by 'daftscale run --report'"
        ) from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"calibration report {path} is not readable JSON ({exc}): pass a report.json") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"calibration report {path} is not a run report (not a JSON object): pass a report.json")
    return data, f"calibration {path.name}"


def _calls(report: dict[str, Any]) -> list[tuple[str, float, float, int]]:
    calls = []
    for call in report.get("udf_calls") or []:
        try:
            calls.append((str(call.get("actor")), float(call["start"]), float(call["end"]), int(call["rows"])))
        except (KeyError, TypeError, ValueError):
            continue
    return [c for c in calls if c[2] >= c[1] and c[3] >= 0]


def _fit_line(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least squares ``y = a + b x``; None when x does not vary enough to separate a from b."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if n < 2 or sxx <= (0.05 * mean_x) ** 2 * n:
        return None
    b = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sxx
    return mean_y - b * mean_x, b


def _measured_pool_start(data: dict[str, Any], first_call: float) -> float | None:
    """When the actor pool was ready, if the report shows it; else None.

    ``actor_startup_s`` is when the last actor's ``__init__`` ended. Daft builds an actor's class when
    work first reaches it; when every ``__init__`` ended before the first call (as in the bench's daftscale
    runs), the pool was ready by then and that is taken as its start. A later ``__init__`` was an actor
    built on its own first batch, and then the report does not show the pool's start.
    """
    value = data.get("actor_startup_s")
    if not data.get("actor_starts") or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value) if 0 < value <= first_call else None


def _fit_task_overhead(
    measure: Callable[[Costs], float], target: float, costs: Costs, *, cap: float | None, what: str
) -> tuple[Costs, list[str]]:
    """``costs`` with the per-task overhead for which ``measure`` (which grows with it) reaches ``target``,
    at most ``cap``; ``what`` names the measured quantity in the notes."""
    if measure(costs) >= target:
        return costs, []

    def with_overhead(value: float) -> Costs:
        return replace(costs, task_overhead_s=value)

    high = max(target, 1e-3)
    if measure(with_overhead(high)) < target:
        # Every task started in the first wave: a per-task cost cannot stretch it.
        fitted = cap or 0.0
        return with_overhead(fitted), [
            f"{what} is longer than per-task overhead can explain (one wave of tasks): {fitted:g} s per task, "
            "the rest not fitted"
        ]
    low = 0.0
    for _ in range(30):  # bisection: the smallest overhead whose measure reaches the target
        mid = (low + high) / 2
        if measure(with_overhead(mid)) < target:
            low = mid
        else:
            high = mid
    if cap is None or high <= cap:
        return with_overhead(high), []
    return with_overhead(cap), [
        f"{what}: tasks would take {high:.3f} s each to explain it, {cap:g} s charged; the rest is not fitted: "
        "while the actors are busy the span does not move until the tasks are slow enough to starve them, so "
        "what it would take is that threshold, not what the tasks did (the measured actor start-up, "
        "actor_startup_s, gives the per-task cost directly)"
    ]


def costs_from_report(
    report: str | os.PathLike[str] | dict[str, Any],
    *,
    max_task_overhead_s: float | None = None,
    pre_udf_seconds_per_row: float = 0.0,
) -> Costs:
    """Fit the costs of a workload from one run report (``report.json`` or its dict).

    - UDF per-call and per-row cost: least squares of call duration on rows over ``udf_calls`` (calls
      queued on one actor are counted from when the previous one returned);
    - dispatch per call: the mean gap between back-to-back calls on one actor (the mean, not the median:
      what the actors lose is the sum over calls, and the gaps are skewed by a few slow ones);
    - start-up: the measured actor-pool start (``actor_startup_s``, when it is before the first call: Daft
      starts the pool after any shuffle and runs no call before every actor is ready) less the simulated
      shuffle; else the time to the first call beyond what the model explains;
    - per-task overhead: from the lead between the pool being ready and the first call when the report
      measured the pool (one task's start, scan and first batch before its first call, with nothing else in
      the way); else the value for which the simulated UDF stage of the report's own plan spans what was
      measured (bisection), at most ``max_task_overhead_s`` when given;
    - tail: wall time after the last call;
    - rows per call as delivered (``delivered_rows_per_call``): the calls' mean rows, when the report's plan
      is known and its calls were clearly more than full batches of its B explain (fragments).

    Pre-UDF work per row (a read or decode inside the tasks) is not fitted: with equal tasks neither the
    lead nor the span tells it from per-task cost. The lead is one task's latency plus its first batch's
    work (in the bench, tasks with a 0.5 ms/row read showed no longer a lead than tasks with none), and
    while the actors are busy the span does not move until the tasks are slow enough to starve them, so a
    fit lands on that threshold whatever the tasks did (in the bench's runs about the UDF's own cost per
    row, for workloads with no pre-UDF step at all). Give it from a profile of that step
    (``pre_udf_seconds_per_row``): the per-task cost and start-up are then fitted net of it. The per-task
    cost from a span has the same threshold, which is what ``max_task_overhead_s`` bounds.

    Examples:
        >>> report = {"wall_s": 3.0, "nodes": 1, "partitions": 1, "actors": 1, "udf_calls": [
        ...     {"actor": "a", "node": "n", "start": 1.0 + i, "end": 1.0 + i + 0.1 + 0.01 * r, "rows": r}
        ...     for i, r in enumerate([10, 20])]}
        >>> c = costs_from_report(report)
        >>> round(c.seconds_per_batch, 3), round(c.seconds_per_row, 3)
        (0.1, 0.01)
    """
    data, source = _load_report(report)
    calls = _calls(data)
    if not calls:
        raise ConfigError(f"{source} has no udf_calls to fit: calibrate from a report of a run with an actor UDF")
    notes: list[str] = []
    if data.get("measurement_incomplete"):
        # The fit still runs on the calls that arrived; the gaps travel with it so a prediction can be doubted.
        notes.append("the run's measurement was incomplete: " + "; ".join(map(str, data["measurement_incomplete"])))
    # Effective durations: an actor runs one call at a time, so a call queued behind another starts
    # when that one returns.
    by_actor: dict[str, list[tuple[float, float, int]]] = {}
    for actor, start, end, rows in calls:
        by_actor.setdefault(actor, []).append((start, end, rows))
    durations: list[float] = []
    sizes: list[float] = []
    gaps: list[float] = []
    for items in by_actor.values():
        items.sort()
        prev_end = -math.inf
        for start, end, rows in items:
            begin = max(start, prev_end)
            if prev_end > -math.inf and start >= prev_end:
                gaps.append(start - prev_end)
            durations.append(max(0.0, end - begin))
            sizes.append(float(rows))
            prev_end = max(prev_end, end)
    fit = _fit_line(sizes, durations)
    mean_rows = sum(sizes) / len(sizes)
    mean_d = sum(durations) / len(durations)
    if fit is not None and fit[0] >= 0 and fit[1] >= 0:
        seconds_per_batch, seconds_per_row = fit
    else:
        profile = data.get("udf_profile") or {}
        if profile.get("seconds_per_batch") is not None and mean_rows > 0:
            seconds_per_batch = min(float(profile["seconds_per_batch"]), mean_d)
            seconds_per_row = (mean_d - seconds_per_batch) / mean_rows
            notes.append("call sizes barely vary: per-call cost taken from the report's UDF profile")
        elif fit is not None and fit[1] < 0:
            seconds_per_batch, seconds_per_row = mean_d, 0.0
            notes.append("duration does not grow with rows: all cost taken as per call")
        elif fit is not None:
            seconds_per_batch = 0.0
            seconds_per_row = mean_d / mean_rows if mean_rows else 0.0
            notes.append("fitted per-call cost was negative: all cost taken as per row")
        else:
            seconds_per_batch = 0.0
            seconds_per_row = mean_d / mean_rows if mean_rows else 0.0
            notes.append(
                "every call had about the same rows, so fixed and per-row cost cannot be separated: "
                "all taken as per row (calibrate from a run with uneven batches, or give a UDF profile)"
            )
    median_d = statistics.median(durations)
    back_to_back = [g for g in gaps if g <= _BACK_TO_BACK_SHARE * median_d]
    dispatch = statistics.fmean(back_to_back) if back_to_back else 0.0
    costs = Costs(
        seconds_per_row=seconds_per_row,
        seconds_per_batch=seconds_per_batch,
        dispatch_s=dispatch,
        task_overhead_s=0.0,
        startup_s=0.0,
        tail_s=0.0,
        pre_udf_seconds_per_row=pre_udf_seconds_per_row,
        source=source,
        assumed=(),
    )
    # The actor is taken from the dispatch on, before the UDF body starts: the model's first call
    # begins one dispatch before the first recorded start.
    first = max(0.0, min(c[1] for c in calls) - dispatch)
    last = max(c[2] for c in calls)
    wall = float(data.get("wall_s") or last)
    tail = max(0.0, wall - last)
    pool = _measured_pool_start(data, min(c[1] for c in calls))
    if pool is not None:
        notes.append(f"actor pool measured ready at {pool:.3f} s, first call {first - pool:.3f} s later")
    elif data.get("actor_starts"):
        notes.append("an actor's __init__ ended after the first call: the pool's start is not seen")
    plan = _report_plan(data, mean_rows)
    if plan is None:
        notes.append(
            "the report carries no plan: task overhead and start-up taken from wall time only, and the "
            "batch size is unknown, so fragmented calls are not checked for"
        )
        if pool is not None and pool <= first:
            return replace(costs, startup_s=pool, task_overhead_s=first - pool, tail_s=tail, notes=tuple(notes))
        return replace(costs, startup_s=first, tail_s=tail, notes=tuple(notes))
    cluster = _report_cluster(data, plan)
    costs, fragments = _fit_delivered_rows(costs, plan, cluster, mean_rows, len(calls))
    notes.extend(fragments)

    if pool is not None:

        def lead(candidate: Costs) -> float:
            result = _simulate(plan, cluster, candidate)
            return result.first_call_s - result.stages["startup"] - result.stages["shuffle"]

        fitted, found = _fit_task_overhead(lead, max(0.0, first - pool), costs, cap=None, what="the lead")
        startup = max(0.0, pool - _simulate(plan, cluster, fitted).stages["shuffle"])
    else:

        def span(candidate: Costs) -> float:
            result = _simulate(plan, cluster, candidate)
            return result.makespan_s - result.stages["tail"] - result.first_call_s

        fitted, found = _fit_task_overhead(
            span, last - first, costs, cap=max_task_overhead_s, what="the UDF stage's span"
        )
        # Start-up: whatever precedes the first call beyond the simulated shuffle and first task.
        startup = max(0.0, first - _simulate(plan, cluster, fitted).first_call_s)
    return replace(fitted, startup_s=startup, tail_s=tail, notes=tuple(notes + found))


# A run whose calls carry on average under this share of the rows full batches would give was handed
# fragments: well below the tail effect of each task's last, partial batch, which the model already has.
_FRAGMENTED_SHARE = 0.8


def _fit_delivered_rows(
    costs: Costs, plan: ScalingPlan, cluster: ClusterSpec, mean_rows: float, calls: int
) -> tuple[Costs, list[str]]:
    """``costs`` with ``delivered_rows_per_call`` set when the run's calls were fragments of its batches.

    The simulated plan (full batches of B, each task's last one partial) says how many rows a call should
    carry on average; a run whose calls carried clearly fewer got smaller pieces from upstream (a join's
    output, small files), and its mean call size is what a prediction at any B has to use.
    """
    if calls < 2 or mean_rows <= 0:
        return costs, []
    expected = _simulate(plan, cluster, replace(costs, delivered_rows_per_call=None))
    expected_mean = int(plan.inputs.get("rows") or 0) / max(1, expected.batches)
    if mean_rows >= _FRAGMENTED_SHARE * expected_mean:
        return costs, []
    return replace(costs, delivered_rows_per_call=mean_rows), [
        f"calls carried {mean_rows:.1f} rows on average where batches of {plan.batch_size:,} would carry "
        f"{expected_mean:.1f}: Daft delivered fragments ({calls:,} calls, {expected.batches:,} full batches); "
        "predictions use calls of that size"
    ]


def plan_from_report(report: str | os.PathLike[str] | dict[str, Any]) -> tuple[ScalingPlan, ClusterSpec]:
    """The plan a run report's run executed (its partitions, actors and rows) and the cluster it ran on:
    what to change (``dataclasses.replace``) to ask how another plan would have done on that cluster."""
    data, source = _load_report(report)
    plan = _report_plan(data, 0.0)
    if plan is None:
        raise ConfigError(f"{source} carries no plan: make it with 'daftscale run --report'")
    return plan, _report_cluster(data, plan)


def _report_plan(data: dict[str, Any], mean_rows: float) -> ScalingPlan | None:
    raw = data.get("plan")
    if not isinstance(raw, dict):
        return None
    try:
        plan = ScalingPlan.from_dict(raw)
    except PlanError:
        return None
    # Simulate what actually ran: the report's partitions and actors override the plan's.
    changes: dict[str, Any] = {}
    if (
        isinstance(data.get("partitions"), int)
        and data["partitions"] > 0
        and plan.strategy == "shuffle"
        and not plan.into_batches
    ):
        changes["partitions"] = data["partitions"]
        changes["partition_op"] = plan.partition_op or "into_partitions"
    if isinstance(data.get("actors"), int) and data["actors"] > 0:
        changes["concurrency"] = data["actors"]
    inputs = dict(plan.inputs)
    if isinstance(data.get("rows_in"), int) and data["rows_in"] > 0:
        inputs["rows"] = data["rows_in"]
    changes["inputs"] = inputs
    return replace(plan, **changes)


def _report_cluster(data: dict[str, Any], plan: ScalingPlan) -> ClusterSpec:
    raw = data.get("cluster") if isinstance(data.get("cluster"), dict) else plan.cluster
    try:
        cluster = ClusterSpec.from_dict(raw)
    except TypeError:
        cluster = ClusterSpec.from_dict(plan.cluster)
    if isinstance(data.get("nodes"), int) and data["nodes"] > 0:
        cluster = replace(cluster, nodes=data["nodes"])
    return cluster


# ---------------------------------------------------------------------------------------------------
# Plot


def plot_utilization(result: SimulationResult, path: str | os.PathLike[str]) -> Path:
    """Write a PNG of actor utilisation over time (matplotlib, Agg), atomically; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = Path(path)
    if target.parent and not target.parent.exists():
        raise ConfigError(f"cannot write the plot to {target}: folder {target.parent} does not exist")
    times = [t for t, _ in result.timeline]
    values = [u * 100 for _, u in result.timeline]
    fig, ax = plt.subplots(figsize=(8, 3.2), dpi=100)
    try:
        ax.fill_between(times, values, step="mid", alpha=0.4)
        ax.plot(times, values, drawstyle="steps-mid", linewidth=1)
        ax.set_ylim(0, 105)
        ax.set_xlim(0, max(result.makespan_s, 1e-9))
        ax.set_xlabel("seconds")
        ax.set_ylabel("actors busy (%)")
        ax.set_title(
            f"predicted: {result.makespan_s:,.1f} s, {result.utilization:.0%} busy over the UDF stage, "
            f"{result.actors} actors"
        )
        fig.tight_layout()
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=target.parent or ".")
        os.close(fd)
        try:
            fig.savefig(tmp, format="png")
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        plt.close(fig)
    return target


__all__ = [
    "Costs",
    "SimulationResult",
    "costs_from_report",
    "plan_from_report",
    "plot_utilization",
    "resolve_costs",
    "simulate",
]
