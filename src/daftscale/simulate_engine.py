"""The simulator's event engine: the UDF stage over representative nodes, event by event.

Owns the node classes (identical nodes simulated once with a multiplicity), the stage's inputs
(:class:`Stage`), how a task's rows are cut into UDF calls (:func:`task_chunks`) and the event loop
(:func:`run_stage`): tasks taken from one queue, least-loaded node first, their pre-UDF work morsel by
morsel on the node's compute threads, each batch on the first free actor. :mod:`daftscale.simulate_model`
builds the stage from a plan and turns the run into a prediction.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, field

from daftscale.simulate_types import Costs

# A task with more batches than this sends them in chunks (several calls per event).
MAX_CHUNKS_PER_TASK = 512


@dataclass
class NodeClass:
    """A representative node standing for ``count`` identical ones, and its state during the stage."""

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
class Stage:
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
class StageRun:
    """What :func:`run_stage` simulated: the first call's start, the last task's end, every call's
    (start, end, weight) and the node classes with their memory peaks."""

    first_start: float
    end: float
    intervals: list[tuple[float, float, float]]
    classes: list[NodeClass]


def call_count(rows: float, call_rows: float) -> int:
    """UDF calls for ``rows`` rows at ``call_rows`` rows per call (at least one; a float call size is a
    mean of delivered fragments, so a hair over a whole number of calls is not one more call)."""
    return max(1, math.ceil(rows / call_rows - 1e-9))


def task_chunks(rows: int, call_rows: float) -> list[tuple[int, int]]:
    """(calls, rows) per event for one task: one call per event, or several when the task has very many.

    ``call_rows`` is the batch size B (full batches, then the remainder) or, when Daft delivers fragments,
    their mean size (the task's rows spread evenly over its calls)."""
    calls = call_count(rows, call_rows)
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


def run_stage(
    classes: list[NodeClass], stage: Stage, costs: Costs, t0: float, *, task_limit: int | None = None
) -> StageRun:
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
            chunks = task_chunks(rows, costs.rows_per_call(stage.batch_size))
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
    return StageRun(
        first_start=t0 if first_start == math.inf else first_start, end=end, intervals=intervals, classes=classes
    )


def node_classes(
    nodes: int, slots: int, actors: int, costs: Costs, batch_bytes: float
) -> tuple[list[NodeClass], str | None]:
    """Nodes grouped by how many actors Daft spreads onto them; pooled when some nodes have none."""
    if actors < nodes:
        # Tasks on nodes without actors send their batches to remote ones, which couples the nodes:
        # simulate the cluster as one pool of every slot and actor, remote calls paying the network.
        remote_share = (nodes - actors) / nodes
        remote_s = remote_share * (costs.remote_call_s + batch_bytes / costs.network_bytes_per_second)
        pooled = NodeClass(count=1, slots=slots * nodes, actors=actors, remote_s=remote_s, task_threads=slots)
        return [pooled], (
            f"{nodes - actors} of {nodes} nodes have no actor: the cluster is simulated as one pool of "
            f"{slots * nodes} slots and {actors} actors, {remote_share:.0%} of calls paying a remote hop"
        )
    low, high_nodes = divmod(actors, nodes)
    classes = []
    if high_nodes:
        classes.append(NodeClass(count=high_nodes, slots=slots, actors=low + 1, task_threads=slots))
    if nodes - high_nodes:
        classes.append(NodeClass(count=nodes - high_nodes, slots=slots, actors=low, task_threads=slots))
    return classes, None


__all__ = [
    "MAX_CHUNKS_PER_TASK",
    "NodeClass",
    "Stage",
    "StageRun",
    "call_count",
    "node_classes",
    "run_stage",
    "task_chunks",
]
