"""Calibration after a sample run ran out of memory: one run at a small batch measures the UDF's peak memory
per row in the actors, and B is bounded by the actor's memory (:func:`after_out_of_memory`).

Daft's default hands the UDF whole morsels (a Parquet row group, thousands of rows), and the cost probe runs
at the planner's B: either may not fit a model's memory on the sample. The rest of calibration is
:mod:`daftscale.calibrate`'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from daftscale.calibrate_predict import (
    COST_PROBE_ACTORS,
    batch_words,
    daft_default_as_plan,
    declared_batch,
    simulated_choice,
)
from daftscale.calibrate_record import (
    Calibration,
    SampleRun,
    finish,
    formula_from,
    no_scaling_step,
    record_rows_at_udf,
    sampled,
    separates,
    summarise,
    udf_rows_of,
)
from daftscale.cluster import ClusterSpec
from daftscale.errors import RunError
from daftscale.plan import ScalingPlan, describe_step
from daftscale.plan_handle import SampledPlan
from daftscale.profile import DataProfile
from daftscale.report import RunReport, fit_udf_cost, fit_udf_memory_per_row

# After Daft's default ran out of memory on the sample, the next sample run's batch is this many times
# smaller than both B and the smallest call that failed: small enough to fit, big enough to measure.
OOM_PROBE_DIVISOR = 8

# Calls that finished before an out-of-memory failure needed to take their peak memory per row as measured.
MIN_MEMORY_CALLS = 2

# Calls per actor the small-batch run makes: it measures the UDF's memory per row, which a few calls show.
# The whole sample at a batch 8 times smaller was mostly per-call cost and an 8-actor pool's start
# (measured on the bench's W4: 1,024 rows at 8 rows per call on 8 actors, 10.9 s of a 33 s job).
MEMORY_RUN_CALLS_PER_ACTOR = 8

# Longest failure text kept in a sample run's record.
MAX_FAILURE_CHARS = 300


def after_out_of_memory(
    data: DataProfile,
    cluster: ClusterSpec,
    kwargs: dict[str, Any],
    formula: ScalingPlan,
    cal: Calibration,
    error: RunError,
    elapsed: float,
    *,
    sampled_run: Callable[[SampledPlan], RunReport],
    started: float,
    failed_name: str = "Daft's default",
    failed_plan: ScalingPlan | None = None,
) -> ScalingPlan:
    """The plan when Daft's default (or the cost probe) ran out of memory on the sample: one sample run at a
    small batch, which measures the UDF's peak memory per row in the actors, then the formula plan with B
    bounded by it.

    The small batch is ``OOM_PROBE_DIVISOR`` times below both B and the smallest call that failed. A UDF
    whose memory the actors cannot see (a GPU's) keeps that batch, since it was measured to fit.
    """
    rows, sample = data.rows, cal.sample_rows
    failed_plan = failed_plan or no_scaling_step(formula, "calibration baseline", udf_batch_size=declared_batch(kwargs))
    failed_rows = [int(c.get("rows") or 0) for c in error.failed_calls if c.get("rows")]
    smallest_failed = min(failed_rows, default=formula.batch_size)
    declared = declared_batch(kwargs)
    first = error.first_failed_call
    raised = f"the UDF raised {first['error']} on a batch of {first.get('rows')} rows" if first else str(error)
    what = f"Daft's default ({batch_words(declared)})" if failed_name == "Daft's default" else failed_name
    oom = f"{what} ran out of memory on the sample: {raised}"
    failed_run = SampleRun(
        name=failed_name, batch_size=failed_plan.udf_batch_size, scaling_step=describe_step(failed_plan), wall_s=0.0,
        elapsed_s=round(elapsed, 3), sample_rows=sample, udf_rows=sum(int(c.get("rows") or 0) for c in error.calls),
        calls=len(error.calls) + len(error.failed_calls),
        mean_rows_per_call=round(sum(failed_rows) / len(failed_rows), 2) if failed_rows else 0.0,
        predicted_full_s=None, failed=oom[:MAX_FAILURE_CHARS],
    )  # fmt: skip
    cal.runs.append(failed_run)
    # The calls that finished before the failure (the cost probe's short remainders) may already have measured
    # the UDF's peak memory per row: then B follows from it, with no further run. The rows reaching the UDF
    # per row are then not measured (taken as 1, and said so).
    early_memory = fit_udf_memory_per_row(error.calls) if len(error.calls) >= MIN_MEMORY_CALLS else None
    if early_memory:
        cal.memory_per_row_bytes = early_memory
        calls = list(error.calls)
        fit = fit_udf_cost(calls)
        planned = formula_from(data, cluster, kwargs, fit if separates(fit) else None, calls, 1.0, None)
        why = (
            f"{oom}; the {len(calls)} calls that finished before (up to {max(int(c['rows']) for c in calls)} rows) "
            f"measured {early_memory / 2**20:.2f} MiB per row at the UDF's peak, so B = {planned.batch_size} fits "
            "the actor's memory (rows reaching the UDF per row not measured: taken as 1)"
        )
        record = finish(cal, calls, formula, planned, (planned, failed_run), "", started)
        return _chosen_for_memory(record, planned, why, f"{what} ran out of memory on the sample")
    probe_batch = max(1, min(formula.batch_size, smallest_failed) // OOM_PROBE_DIVISOR)
    # The cost probe's small pool (a pool's start is most of a sample run's cost), on as few rows as
    # MEMORY_RUN_CALLS_PER_ACTOR calls need. Calls of one size: a small call's fixed memory (the hand-over,
    # scratch space) would read as per-row memory and lower B.
    probe = formula_from(data, cluster, {**kwargs, "batch_size": probe_batch}, None, [], 1.0, None)
    probe = replace(probe, concurrency=min(probe.concurrency, COST_PROBE_ACTORS))
    sample = min(sample, MEMORY_RUN_CALLS_PER_ACTOR * probe_batch * probe.concurrency)
    t0 = time.monotonic()
    try:
        report = sampled_run(sampled(probe, rows, sample, by_fraction=False))
    except RunError as exc:
        if exc.out_of_memory:
            raise RunError(
                f"the UDF ran out of memory on the calibration sample at a batch of {probe_batch} rows as well as "
                f"in {what}: give the UDF more memory (--udf-memory, fewer actors per node) ({exc})"
            ) from exc
        raise
    calls = list(report.udf_calls)
    udf_rows = udf_rows_of(report)
    # No rows at the UDF: taken as 1 per row.
    # The run's own rows at the step: a join's sample is whole files of its largest read
    # (daftscale.execution.spread_files), which may be many more rows than asked for.
    run_rows = report.rows_in or sample
    growth, rows_at_udf = record_rows_at_udf(cal, udf_rows or run_rows, sample_rows=run_rows)
    run = summarise(f"small batch ({probe_batch} rows)", probe, report, time.monotonic() - t0, run_rows, rows_at_udf)
    cal.runs.append(run)
    memory = fit_udf_memory_per_row(calls)
    cal.memory_per_row_bytes = memory
    fit = fit_udf_cost(calls)
    options = kwargs if memory else {**kwargs, "batch_size": probe_batch}
    planned = formula_from(data, cluster, options, fit if separates(fit) else None, calls, growth, None)
    if memory:
        why = (
            f"{oom}; a batch of {probe_batch} rows measured {memory / 2**20:.2f} MiB per row at the UDF's peak, "
            f"so B = {planned.batch_size} fits the actor's memory"
        )
    else:
        why = f"{oom}; the UDF's memory is not visible in the actors (a GPU's?), so B = {probe_batch}, measured to fit"
    record = finish(cal, calls, formula, planned, (planned, run), "", started)
    return _chosen_for_memory(record, planned, why, f"{what} ran out of memory on the sample")


def _chosen_for_memory(record: ScalingPlan, planned: ScalingPlan, why: str, basis: str) -> ScalingPlan:
    """``record`` (what :func:`finish` made of ``planned``) with the decision saying that memory chose it."""
    decision = {**(record.decision or {}), "why": why, "basis": basis}
    return replace(record, decision=decision, steps=(*planned.steps, f"Calibration: {why}."))


def after_halved_calls(
    data: DataProfile,
    cluster: ClusterSpec,
    kwargs: dict[str, Any],
    formula: ScalingPlan,
    cal: Calibration,
    report: RunReport,
    probe_run: SampleRun,
    candidate: ScalingPlan,
    growth: float,
    started: float,
) -> tuple[ScalingPlan, ScalingPlan | None]:
    """``(candidate, plan)`` after the cost probe's calls ran out of memory and were run again in halves
    (``report.udf_calls_halved``, :func:`daftscale.udf.recorded_call`).

    ``candidate`` comes back with B below the smallest call that ran out (the largest call that fitted, when
    the memory per row measured in the actors does not bound it already: a GPU's memory is not seen there).
    ``plan`` is the plan to run when Daft's default would hand the UDF calls as big as one that ran out (its
    declared batch, or a whole morsel): it is then no candidate. Otherwise None, and the caller weighs the
    two as usual.
    """
    calls = list(report.udf_calls)
    first_halved = min(report.udf_calls_halved, key=lambda c: int(c["rows"]))
    smallest = int(first_halved["rows"])
    memory = fit_udf_memory_per_row(calls)  # finish() records it
    capped = candidate.batch_size >= smallest
    if capped:
        fitting = max((int(c["rows"]) for c in calls if int(c["rows"]) < smallest), default=1)
        candidate = formula_from(data, cluster, {**kwargs, "batch_size": fitting}, None, calls, growth, None)
    declared = declared_batch(kwargs)
    default_batch = daft_default_as_plan(formula, data, declared).batch_size
    error = first_halved.get("error", "")
    ran_out = f"the cost probe's calls of {smallest} rows and more ran out of memory ({error}) and were run in halves"
    cal.changed.append(ran_out)
    if default_batch < smallest:
        return candidate, None
    if capped:
        bound = f"B = {candidate.batch_size}, the largest call that fitted"
    elif memory and kwargs.get("udf") is not None and getattr(kwargs["udf"], "memory", None):
        bound = (
            f"{memory / 2**20:.2f} MiB per row measured at the UDF's peak, so B = {candidate.batch_size} fits the "
            "actor's declared memory"
        )
    else:
        bound = f"B = {candidate.batch_size}, below the smallest call that ran out"
    why = (
        f"{ran_out}: Daft's default ({batch_words(declared)}, calls of up to {default_batch:,} rows) would run "
        f"out too; {bound}"
    )
    # Daft's default with the UDF's batch bounded at B is a candidate still (no scaling step, as a user would
    # fix it by hand): the simulator weighs it against the formula plan, which must be clearly faster.
    basis = "the cost probe ran out of memory"
    verdict = simulated_choice(data, cluster, candidate, report, candidate.batch_size, None, measured_fragments=False)
    if verdict is not None and not (verdict.scaling_step and verdict.clear):
        cal.simulated = verdict.to_dict()
        why = f"{why}; with that batch, {verdict.why}, its UDF's batch bounded at {candidate.batch_size}"
        record = finish(cal, calls, formula, candidate, None, why, started)
        predicted = (record.decision or {}).get("predicted_s")
        kept = no_scaling_step(record, why, predicted_s=predicted, udf_batch_size=candidate.batch_size, basis=basis)
        return candidate, kept
    record = finish(cal, calls, formula, candidate, (candidate, probe_run), "", started)
    return candidate, _chosen_for_memory(record, candidate, why, basis)


__all__ = [
    "MAX_FAILURE_CHARS",
    "MEMORY_RUN_CALLS_PER_ACTOR",
    "MIN_MEMORY_CALLS",
    "OOM_PROBE_DIVISOR",
    "after_halved_calls",
    "after_out_of_memory",
]
