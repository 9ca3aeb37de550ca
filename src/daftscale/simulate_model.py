"""The simulation model: a plan on a cluster, stage by stage, into a :class:`SimulationResult`.

Owns the stages of :func:`simulate_plan` (the workload's numbers, the actors that fit, the scan and
shuffle before the UDF, the UDF stage on :mod:`daftscale.simulate_engine`, busy time, the node and actor
memory verdicts, the bottleneck, the utilisation timeline). The model itself is described in
:mod:`daftscale.simulate`, which is the public entry point (:func:`daftscale.simulate.simulate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.config import DEFAULT_INFLATION, format_bytes
from daftscale.errors import PlanError
from daftscale.plan import ScalingPlan, UdfResources, actor_memory_budget, cluster_actor_capacity
from daftscale.simulate_engine import Stage, StageRun, call_count, node_classes, run_stage, task_chunks
from daftscale.simulate_types import (
    ACTOR_READY_TIMEOUT_S,
    DEFAULT_MEMORY_LIMIT_FRACTION,
    DEFAULT_OBJECT_STORE_FRACTION,
    DEFAULT_SCAN_TASK_BYTES,
    DEFAULT_SCAN_TASK_ROWS,
    DEFAULT_TASK_SLOTS_PER_NODE,
    Costs,
    SimulationResult,
)

# Largest number of batch events simulated for one representative node before the UDF stage is
# extrapolated from two prefixes; keeps 1,000 nodes × 10⁹ rows to seconds.
EVENT_BUDGET = 250_000

# Points of the predicted utilisation timeline: enough for a plot, small enough for a report.
TIMELINE_POINTS = 120


# ---------------------------------------------------------------------------------------------------
# The stages of a simulation


@dataclass
class _Workload:
    """The plan's numbers every stage uses, and what the prediction will own up to."""

    rows: int
    nodes: int
    slots: int  # task slots per node (one per CPU)
    bytes_per_row: float
    mem_per_row: float  # resident bytes per row of a task's input
    batch: int
    call_rows: float  # rows per UDF call: the batch size, or the smaller fragments Daft delivers
    approximations: list[str]
    assumptions: list[str]


@dataclass
class _Tasks:
    """The scan and shuffle before the UDF (if any), and the UDF stage's tasks."""

    scan_tasks: int
    shuffle_s: float
    shuffle_store_per_node: float  # shuffled bytes each node's object store holds
    pre_per_row: float  # work per row inside a UDF task before its first call
    partition_op: str | None
    materialised: bool  # a task's whole input is in memory
    fetch_per_task: float  # a repartition task fetching its pieces
    tasks: int
    sizes: list[int] | None  # rows of each task, when the input files give them


@dataclass
class _UdfStage:
    """The simulated UDF stage: the engine's run, and its end and span once extrapolated to every task."""

    run: StageRun
    t0: float  # when the stage can start (after start-up and shuffle)
    end: float
    span_scale: float  # the whole stage's span over the simulated prefix's (1 when every task was simulated)
    remote_s_per_call: float  # mean remote-hop cost per call over the node classes


def _workload(plan: ScalingPlan, cluster: ClusterSpec, costs: Costs) -> _Workload:
    inputs = plan.inputs or {}
    rows = int(inputs.get("rows") or 0)
    if rows < 1:
        raise PlanError("the plan has no row count (inputs.rows): make it again with 'daftscale plan'")
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
    return _Workload(
        rows, cluster.nodes, slots, bytes_per_row, mem_per_row, batch, call_rows, approximations, assumptions
    )


def _actors(plan: ScalingPlan, cluster: ClusterSpec, costs: Costs, w: _Workload) -> tuple[int, float]:
    """Actors and start-up: the plan's concurrency, unless the cluster cannot schedule it (Daft waits, then
    goes on with the actors that started)."""
    actors = int(plan.concurrency)
    startup = costs.startup_s
    capacity = cluster_actor_capacity(cluster, plan.udf_cpus, plan.udf_gpus)
    if capacity is not None and actors > capacity:
        if capacity < 1:
            raise PlanError(
                f"the plan's UDF needs {plan.udf_gpus:g} GPU per actor but this cluster has "
                f"{cluster.gpus_per_node:g} per node: simulate on a cluster with GPUs (--gpus-per-node)"
            )
        w.assumptions.append(
            f"{actors} actors do not fit this cluster ({capacity} do): Daft waits {ACTOR_READY_TIMEOUT_S:.0f} s "
            f"for them, then runs with {capacity}"
        )
        actors = capacity
        startup += ACTOR_READY_TIMEOUT_S
    return actors, startup


def _tasks(plan: ScalingPlan, costs: Costs, w: _Workload) -> _Tasks:
    """Scan and shuffle (closed form: equal map tasks in waves over every slot, then a barrier), then the
    UDF stage's tasks: the partitions, the ``into_batches`` chunks, or the input files."""
    inputs = plan.inputs or {}
    rows, nodes, slots, bytes_per_row, mem_per_row = w.rows, w.nodes, w.slots, w.bytes_per_row, w.mem_per_row
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
        w.assumptions.append(f"{scan_tasks:,} scan task(s): input files unknown, taken as about 256 MiB each")
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
        w.approximations.append(
            f"shuffle: {scan_tasks:,} map task(s) × {pieces:,} piece(s) in {waves:,} wave(s), hard barrier; "
            "Daft's pre-shuffle merge is not modelled"
        )
        udf_tasks_base = parts
    else:
        pre_per_row += costs.scan_seconds_per_row
        udf_tasks_base = scan_tasks
        if plan.strategy == "streaming" and plan.partition_bytes_target and total_bytes:
            udf_tasks_base = max(scan_tasks, math.ceil(total_bytes / plan.partition_bytes_target))
    if plan.into_batches:
        per_part = rows / udf_tasks_base
        tasks = udf_tasks_base * max(1, math.ceil(per_part / plan.into_batches))
        materialised = True
        if plan.into_batches % w.batch:
            w.approximations.append("into_batches chunks taken as equal-sized tasks")
        if not partition_op:
            w.approximations.append("the scan before into_batches is folded into each task's pre-UDF work")
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
        w.approximations.append(
            f"{tasks:,} tasks of the input files' own sizes ({min(sizes):,} to {max(sizes):,} rows)"
        )
    return _Tasks(
        scan_tasks,
        shuffle_s,
        shuffle_store_per_node,
        pre_per_row,
        partition_op,
        materialised,
        fetch_per_task,
        tasks,
        sizes,
    )


def _udf_stage(costs: Costs, w: _Workload, t: _Tasks, actors: int, t0: float, udf_mem_per_row: float) -> _UdfStage:
    """The UDF stage on the event engine, over representative nodes; above the event budget, two prefixes
    of the task queue and a linear extrapolation (steady state)."""
    rows, tasks, call_rows = w.rows, t.tasks, w.call_rows
    classes, pooled = node_classes(w.nodes, w.slots, actors, costs, w.batch * w.bytes_per_row)
    if pooled:
        w.approximations.append(pooled)
    if t.sizes and len(set(t.sizes)) > 1 and any(c.count > 1 for c in classes):
        # A class's nodes would each take the mean of the next tasks' rows, losing what uneven files are
        # about (the largest file's node finishes last): simulate every node when the events allow.
        chunk_events = sum(call_count(size, call_rows) for size in t.sizes)
        if chunk_events <= EVENT_BUDGET:
            classes = [replace(c, count=1) for c in classes for _ in range(c.count)]
    if t.pre_per_row > 0 and tasks < w.nodes * w.slots:
        w.approximations.append(
            "pre-UDF work of a task runs on up to one morsel (batch) per CPU of its node at once, as Daft's UDF "
            "operator does (Python work that holds the GIL would not)"
        )
    stage = Stage(
        tasks=tasks,
        rows=rows,
        batch_size=w.batch,
        overhead_s=costs.task_overhead_s + t.fetch_per_task,
        pre_s_per_row=t.pre_per_row,
        mem_per_row=w.mem_per_row,
        udf_mem_per_row=udf_mem_per_row,
        materialised=t.materialised,
        sizes=t.sizes,
    )
    per_task_chunks = len(task_chunks(max(1, rows // tasks), call_rows))
    if per_task_chunks < call_count(rows / tasks, call_rows):
        w.approximations.append(f"tasks send their batches in {per_task_chunks} chunks each (several calls per event)")
    reps = len(classes)
    counted = sum(c.count for c in classes)
    events = tasks * per_task_chunks * reps / counted
    if events <= EVENT_BUDGET:
        run = run_stage(classes, stage, costs, t0)
        span_scale = 1.0
        udf_end = run.end
    else:
        # Steady state: the stage's span grows linearly with tasks once every slot has cycled, so two
        # prefixes of the queue give the slope.
        unit = counted
        t2 = max(2 * unit, int(EVENT_BUDGET * counted / (per_task_chunks * reps)) // unit * unit)
        t1 = max(unit, t2 // 2 // unit * unit)
        first = run_stage([replace(c) for c in classes], stage, costs, t0, task_limit=t1)
        run = run_stage(classes, stage, costs, t0, task_limit=t2)
        slope = (run.end - first.end) / (t2 - t1)
        udf_end = run.end + slope * (tasks - t2)
        span_scale = (udf_end - run.first_start) / max(run.end - run.first_start, 1e-12)
        w.approximations.append(
            f"UDF stage simulated for the first {t1:,} and {t2:,} of {tasks:,} tasks and extrapolated "
            "linearly (steady state); busy time and rows are exact"
        )
    if any(c.count > 1 for c in classes):
        w.approximations.append(
            "identical nodes simulated once per class with a multiplicity ("
            + ", ".join(f"{c.count}×{c.actors} actors" for c in classes)
            + ")"
        )
    remote_s_per_call = sum(c.remote_s for c in classes) / reps
    return _UdfStage(run, t0, udf_end, span_scale, remote_s_per_call)


def _busy(costs: Costs, w: _Workload, t: _Tasks, udf: _UdfStage) -> tuple[int, float]:
    """UDF calls and actor-seconds busy, exact: every task's calls and rows."""
    rows, tasks, call_rows = w.rows, t.tasks, w.call_rows
    base, extra = divmod(rows, tasks)
    calls = extra * call_count(base + 1, call_rows) + (tasks - extra) * call_count(base, call_rows) if base else extra
    if t.sizes:
        calls = sum(call_count(size, call_rows) for size in t.sizes)
    remote_total = udf.remote_s_per_call * calls
    busy = calls * (costs.dispatch_s + costs.seconds_per_batch) + rows * costs.seconds_per_row + remote_total
    return calls, busy


def _node_memory(
    cluster: ClusterSpec, w: _Workload, t: _Tasks, run: StageRun
) -> tuple[list[dict[str, Any]], float, bool, str, float]:
    """Memory per node class and the node verdict: ``(node peaks, peak, oom, verdict, spilled bytes)``."""
    store_capacity = (cluster.memory_per_node or 0) * DEFAULT_OBJECT_STORE_FRACTION
    per_node = t.shuffle_store_per_node
    store_used = min(per_node, store_capacity) if cluster.memory_per_node else per_node
    spilled = max(0.0, per_node - store_used) * min(w.nodes, t.scan_tasks) if t.partition_op else 0.0
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
    if w.mem_per_row == 0:
        w.assumptions.append("bytes per row unknown: task memory not counted (pass --bytes-per-row)")
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
    return node_peaks, peak, oom, verdict, spilled


@dataclass
class _ActorMemory:
    """One UDF batch against its actor's own memory limit."""

    oom: bool
    batch_bytes: float
    budget: int | None
    verdict: str  # the node verdict with the actor's added


def _actor_memory(
    plan: ScalingPlan,
    cluster: ClusterSpec,
    w: _Workload,
    t: _Tasks,
    udf_mem_per_row: float,
    node_verdict: tuple[bool, str],
) -> _ActorMemory:
    """One actor: a call holds its whole batch at once, and the batch is at most its task's rows. The
    limit is the declared UDF memory, else a GPU UDF's GPU memory; a CPU actor without a declared budget
    shares its node's memory, which the node verdict covers."""
    largest_batch = min(w.batch, max(t.sizes) if t.sizes else math.ceil(w.rows / t.tasks))
    udf_batch_bytes = largest_batch * udf_mem_per_row
    declared = (plan.inputs or {}).get("udf_memory")
    udf = UdfResources(cpus=plan.udf_cpus, gpus=plan.udf_gpus, memory=int(declared) if declared else None)
    udf_budget, udf_budget_why = actor_memory_budget(cluster, udf)
    node_oom, verdict = node_verdict
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
        verdict = actor_verdict + ("; and " + verdict if node_oom else "")
    elif udf_budget and udf_mem_per_row:
        verdict += (
            f"; a UDF batch of {largest_batch:,} rows needs {format_bytes(udf_batch_bytes)} of the actor's "
            f"{format_bytes(udf_budget)} ({udf_budget_why})"
        )
    return _ActorMemory(actor_oom, udf_batch_bytes, udf_budget, verdict)


def simulate_plan(plan: ScalingPlan, cluster: ClusterSpec, costs: Costs) -> SimulationResult:
    """Simulate ``plan`` on ``cluster`` with ``costs``, stage by stage (no defaults resolved: see
    :func:`daftscale.simulate.simulate`, the public entry point)."""
    w = _workload(plan, cluster, costs)
    actors, startup = _actors(plan, cluster, costs, w)
    t = _tasks(plan, costs, w)
    udf_mem_per_row = _udf_memory_per_row(plan, costs, w.mem_per_row)
    t0 = startup + t.shuffle_s
    udf = _udf_stage(costs, w, t, actors, t0, udf_mem_per_row)
    run = udf.run
    calls, busy = _busy(costs, w, t, udf)
    udf_span = max(udf.end - run.first_start, 1e-12)
    makespan = udf.end + costs.tail_s
    utilization = min(1.0, busy / (actors * udf_span))
    utilization_all = min(1.0, busy / (actors * makespan)) if makespan > 0 else 0.0
    node_peaks, peak, node_oom, node_verdict, spilled = _node_memory(cluster, w, t, run)
    actor = _actor_memory(plan, cluster, w, t, udf_mem_per_row, (node_oom, node_verdict))
    stages = {
        "startup": round(startup, 6),
        "shuffle": round(t.shuffle_s, 6),
        "udf": round(udf.end - t0, 6),
        "tail": round(costs.tail_s, 6),
    }
    bottleneck = _bottleneck(
        makespan=makespan,
        stages=stages,
        utilization=utilization,
        tasks=t.tasks,
        nodes=w.nodes,
        slots=w.slots,
        actors=actors,
        calls=calls,
        busy=busy,
        costs=costs,
        pre_per_row=t.pre_per_row,
        rows=w.rows,
        call_rows=w.call_rows,
        batch=w.batch,
    )
    timeline = _timeline(
        run.intervals, t0=t0, scale=udf.span_scale, first=run.first_start, makespan=makespan, actors=actors
    )
    return SimulationResult(
        makespan_s=makespan,
        utilization=utilization,
        utilization_of_makespan=utilization_all,
        first_call_s=run.first_start,
        peak_memory_bytes=int(peak),
        node_peak_memory_bytes=node_peaks,
        memory_per_node=cluster.memory_per_node,
        oom=node_oom or actor.oom,
        verdict=actor.verdict,
        bottleneck=bottleneck,
        stages=stages,
        tasks=t.tasks,
        batches=calls,
        actors=actors,
        busy_s=busy,
        spilled_bytes=int(spilled),
        timeline=timeline,
        approximations=w.approximations,
        assumptions=w.assumptions,
        costs=costs.to_dict(),
        actor_oom=actor.oom,
        udf_batch_bytes=int(actor.batch_bytes),
        udf_memory_bytes=actor.budget,
        plan={
            "strategy": plan.strategy,
            "partitions": plan.partitions,
            "into_batches": plan.into_batches,
            "batch_size": plan.batch_size,
            "concurrency": plan.concurrency,
            "nodes": w.nodes,
        },
    )


def _udf_memory_per_row(plan: ScalingPlan, costs: Costs, mem_per_row: float) -> float:
    """Working bytes per row of a UDF batch: the costs' figure, else the plan's UDF profile (what the
    planner sized the batch with), else the task's decoded bytes per row."""
    if costs.udf_memory_per_row is not None:
        return costs.udf_memory_per_row
    profiled = (plan.udf_profile or {}).get("memory_per_row_bytes")
    return float(profiled) if profiled else mem_per_row


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
    edges = np.linspace(0.0, makespan, TIMELINE_POINTS + 1)
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


__all__ = ["EVENT_BUDGET", "TIMELINE_POINTS", "simulate_plan"]
