"""Costs fitted from a run report: what calibrates the simulator to a workload and a cluster.

Owns :func:`costs_from_report` (the UDF's per-call and per-row cost, dispatch, start-up, per-task
overhead, tail and the rows Daft delivered per call, from one ``report.json``) and :func:`plan_from_report`
(the plan and cluster a report's run executed). Reads the report when given a path; otherwise pure.
:mod:`daftscale.simulate` re-exports both.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.errors import ConfigError, PlanError
from daftscale.fit import fit_line
from daftscale.plan import ScalingPlan
from daftscale.report_figures import actor_pools
from daftscale.simulate_model import simulate_plan
from daftscale.simulate_types import Costs

# Calls on one actor closer together than this share of the median call are back to back: the gap
# between them is the per-call dispatch cost, not idling for want of work.
BACK_TO_BACK_SHARE = 0.5


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
    fit = fit_line(sizes, durations, min_spread=0.05)
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
    back_to_back = [g for g in gaps if g <= BACK_TO_BACK_SHARE * median_d]
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
            result = simulate_plan(plan, cluster, candidate)
            return result.first_call_s - result.stages["startup"] - result.stages["shuffle"]

        fitted, found = _fit_task_overhead(lead, max(0.0, first - pool), costs, cap=None, what="the lead")
        startup = max(0.0, pool - simulate_plan(plan, cluster, fitted).stages["shuffle"])
    else:

        def span(candidate: Costs) -> float:
            result = simulate_plan(plan, cluster, candidate)
            return result.makespan_s - result.stages["tail"] - result.first_call_s

        fitted, found = _fit_task_overhead(
            span, last - first, costs, cap=max_task_overhead_s, what="the UDF stage's span"
        )
        # Start-up: whatever precedes the first call beyond the simulated shuffle and first task.
        startup = max(0.0, first - simulate_plan(plan, cluster, fitted).first_call_s)
    return replace(fitted, startup_s=startup, tail_s=tail, notes=tuple(notes + found))


# A run whose calls carry on average under this share of the rows full batches would give was handed
# fragments: well below the tail effect of each task's last, partial batch, which the model already has.
FRAGMENTED_CALL_SHARE = 0.8


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
    expected = simulate_plan(plan, cluster, replace(costs, delivered_rows_per_call=None))
    expected_mean = int(plan.inputs.get("rows") or 0) / max(1, expected.batches)
    if mean_rows >= FRAGMENTED_CALL_SHARE * expected_mean:
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
    # With several models the report's actors are all their pools together (older reports: one model's), and the
    # plan's concurrency is each model's: kept as it is.
    one_pool = actor_pools(plan.inputs, data.get("udf_calls") or []) == 1
    if one_pool and isinstance(data.get("actors"), int) and data["actors"] > 0:
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


__all__ = ["BACK_TO_BACK_SHARE", "FRAGMENTED_CALL_SHARE", "costs_from_report", "plan_from_report"]
