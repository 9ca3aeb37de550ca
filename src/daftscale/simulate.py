"""Simulate a plan: predict makespan, actor utilisation and per-node peak memory without running it.

The public face of the discrete-event model of how Daft executes a :class:`~daftscale.plan.ScalingPlan`
on Ray: :func:`simulate`, :func:`resolve_costs` and :func:`plot_utilization` live here; the costs it runs
on (:class:`Costs`: defaults, a UDF profile, or a calibration fitted from a run report) and the result
(:class:`SimulationResult`) in :mod:`daftscale.simulate_types`, the stages in
:mod:`daftscale.simulate_model`, the event loop in :mod:`daftscale.simulate_engine` and the fit from a
run report (:func:`costs_from_report`, :func:`plan_from_report`) in :mod:`daftscale.simulate_fit`; this
module re-exports them. Pure functions; only :func:`costs_from_report` (given a path) and
:func:`plot_utilization` touch files.

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

import math
import os
import tempfile
from pathlib import Path
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.errors import ConfigError, PlanError
from daftscale.plan import ScalingPlan
from daftscale.simulate_fit import costs_from_report, plan_from_report
from daftscale.simulate_model import EVENT_BUDGET, simulate_plan
from daftscale.simulate_types import (
    ACTOR_READY_TIMEOUT_S,
    ASSUMABLE_COSTS,
    DEFAULT_DISPATCH_S,
    DEFAULT_MEMORY_LIMIT_FRACTION,
    DEFAULT_NETWORK_BYTES_PER_SECOND,
    DEFAULT_OBJECT_STORE_FRACTION,
    DEFAULT_REMOTE_CALL_S,
    DEFAULT_SCAN_SECONDS_PER_ROW,
    DEFAULT_SCAN_TASK_BYTES,
    DEFAULT_SCAN_TASK_ROWS,
    DEFAULT_SECONDS_PER_BATCH,
    DEFAULT_SECONDS_PER_ROW,
    DEFAULT_SHUFFLE_SECONDS_PER_OBJECT,
    DEFAULT_STARTUP_S,
    DEFAULT_TAIL_S,
    DEFAULT_TASK_OVERHEAD_S,
    DEFAULT_TASK_SLOTS_PER_NODE,
    Costs,
    SimulationResult,
)


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
    return simulate_plan(plan, cluster, costs)


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
    "ACTOR_READY_TIMEOUT_S",
    "ASSUMABLE_COSTS",
    "DEFAULT_DISPATCH_S",
    "DEFAULT_MEMORY_LIMIT_FRACTION",
    "DEFAULT_NETWORK_BYTES_PER_SECOND",
    "DEFAULT_OBJECT_STORE_FRACTION",
    "DEFAULT_REMOTE_CALL_S",
    "DEFAULT_SCAN_SECONDS_PER_ROW",
    "DEFAULT_SCAN_TASK_BYTES",
    "DEFAULT_SCAN_TASK_ROWS",
    "DEFAULT_SECONDS_PER_BATCH",
    "DEFAULT_SECONDS_PER_ROW",
    "DEFAULT_SHUFFLE_SECONDS_PER_OBJECT",
    "DEFAULT_STARTUP_S",
    "DEFAULT_TAIL_S",
    "DEFAULT_TASK_OVERHEAD_S",
    "DEFAULT_TASK_SLOTS_PER_NODE",
    "EVENT_BUDGET",
    "Costs",
    "SimulationResult",
    "costs_from_report",
    "plan_from_report",
    "plot_utilization",
    "resolve_costs",
    "simulate",
]
