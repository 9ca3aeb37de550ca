"""What calibration measured, and the plan it makes of it: the records and the steps both of its paths share.

Owns the record of each sample run (:class:`SampleRun`) and of the whole calibration (:class:`Calibration`,
stored in the plan), the sampled plan a sample run gets (:func:`sampled`), the formula plan made from
measured numbers (:func:`formula_from`), the decision "no scaling step" (:func:`no_scaling_step`), and
:func:`finish`, which turns a calibration's runs and verdict into the full-data plan. The decision flow
is :mod:`daftscale.calibrate`'s; the out-of-memory path is :mod:`daftscale.calibrate_memory`'s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from daftscale.calibrate_predict import SimulatedChoice, batch_words, planner_options
from daftscale.cluster import ClusterSpec
from daftscale.config import format_bytes
from daftscale.errors import DaftscaleError
from daftscale.plan import AGGREGATION_SETTING, ScalingPlan, describe_step
from daftscale.plan_handle import SampledPlan
from daftscale.profile import DataProfile, UdfProfile
from daftscale.report import RunReport, fit_udf_cost, fit_udf_memory_per_row
from daftscale.tune import extrapolated_wall_s


def sampled(
    plan: ScalingPlan, rows: int, sample_rows: int, *, by_fraction: bool, halve_out_of_memory: bool = False
) -> SampledPlan:
    """``plan`` on a sample of about ``sample_rows`` of the ``rows`` at the scaling step (``rows`` there, not at
    the UDF, so partitions scale with the sample): the tuner's ``df.limit`` sample, or ``df.sample(fraction)``.
    ``halve_out_of_memory``: a UDF call that runs out of memory is run again in halves (the cost probe's)."""
    sample = SampledPlan.of(
        replace(plan, inputs={**plan.inputs, "rows": rows}),
        sample_rows,
        fraction=sample_rows / rows if by_fraction else None,
    )
    return replace(sample, halve_out_of_memory=halve_out_of_memory)


def with_small_downstream_aggregations(
    run_sample: Callable[[SampledPlan], RunReport],
) -> Callable[[SampledPlan], RunReport]:
    """``run_sample`` with each sample's groupby shuffled into as many partitions as the sample's actors.

    For pipelines with no groupby before the scaling step (the caller checks): a sample is a few thousand
    rows, but Daft sizes a groupby after the UDF from the partitions reaching it (one per input file: up to
    200 tasks). Measured on the bench's W5 (300 files, a groupby after the UDF): a 1,200-row cost probe took
    8.9-9.8 s with Daft's 200 and 4.0-4.7 s with 8. What a sample measures, the UDF's calls, comes before it.

    >>> from daftscale import plan, profile_numbers, ClusterSpec
    >>> full = plan(profile_numbers(24_000, 100), ClusterSpec(nodes=2, cpus_per_node=4), concurrency=2)
    >>> ran = []
    >>> _ = with_small_downstream_aggregations(ran.append)(sampled(full, 24_000, 1_200, by_fraction=False))
    >>> ran[0].plan.execution_config, ran[0].sample_rows
    ({'shuffle_aggregation_default_partitions': 2}, 1200)
    """

    def run(sample: SampledPlan) -> RunReport:
        config = {**sample.plan.execution_config, AGGREGATION_SETTING: max(1, sample.plan.concurrency)}
        return run_sample(replace(sample, plan=replace(sample.plan, execution_config=config)))

    return run


@dataclass
class SampleRun:
    """One calibration run: which plan, what it measured, and what it predicts for all the data."""

    name: str
    # None: Daft's own batch (each morsel whole), for Daft's default with no declared batch size.
    batch_size: int | None
    scaling_step: str
    wall_s: float
    elapsed_s: float
    sample_rows: int
    udf_rows: int
    calls: int
    mean_rows_per_call: float
    predicted_full_s: float | None
    # Why the run failed (Daft's default out of memory), or None.
    failed: str | None = None


@dataclass
class Calibration:
    """What calibration measured and decided; stored in the plan (``plan.calibration``) and the report."""

    sample_rows: int
    rows: int
    runner: str
    budget_s: float | None = None
    # The pipeline's own UDF batch size (None: Daft's own), which "no scaling step" keeps.
    declared_batch_size: int | None = None
    # How the sample was taken: "df.limit(n)", or "df.sample(fraction)" after a join or shuffle.
    sampling: str = ""
    elapsed_s: float = 0.0
    rows_at_udf_per_row: float | None = None
    rows_at_udf: int | None = None
    seconds_per_batch: float | None = None
    seconds_per_row: float | None = None
    # The UDF's peak memory per row in the actors (report.fit_udf_memory_per_row), when it was measured.
    memory_per_row_bytes: float | None = None
    fitted_calls: int = 0
    runs: list[SampleRun] = field(default_factory=list)
    # The simulator's verdict from Daft's default run (SimulatedChoice.to_dict), when it could fit the costs.
    simulated: dict[str, Any] | None = None
    changed: list[str] = field(default_factory=list)
    skipped: str | None = None
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def udf_rows_of(report: RunReport) -> int:
    return sum(int(c.get("rows") or 0) for c in report.udf_calls)


def summarise(
    name: str, plan: ScalingPlan, report: RunReport, elapsed: float, sample: int, udf_rows_full: int
) -> SampleRun:
    udf_rows = udf_rows_of(report)
    calls = len(report.udf_calls)
    # Rows at the UDF on both sides: the extrapolation adds the rows the UDF did not see at its steady rate.
    predicted = extrapolated_wall_s(report.udf_calls, report.wall_s, udf_rows, udf_rows_full, plan.concurrency)
    return SampleRun(
        name=name,
        batch_size=plan.udf_batch_size,
        scaling_step=describe_step(plan),
        wall_s=report.wall_s,
        elapsed_s=round(elapsed, 3),
        sample_rows=sample,
        udf_rows=udf_rows,
        calls=calls,
        mean_rows_per_call=round(udf_rows / calls, 2) if calls else 0.0,
        predicted_full_s=predicted,
    )


def no_scaling_step(plan: ScalingPlan, why: str, **decision: Any) -> ScalingPlan:
    """``plan`` with the decision "no scaling step": ``apply`` leaves the DataFrame alone (Daft's default).

    ``udf_batch_size`` (in ``decision``) is the batch the UDF gets: None for Daft's own, else it becomes the
    plan's ``batch_size`` too, so the plan's numbers are what runs (and an edited saved plan runs its edit).
    """
    levers = {
        **plan.levers,
        "partitions": "not used: no scaling step (Daft's default partitions)",
        "into_batches": "not used: no scaling step",
    }
    batch = decision.get("udf_batch_size")
    if batch is not None:
        plan = replace(plan, batch_size=int(batch))
    return replace(plan, decision={"scaling_step": False, "why": why, **decision}, levers=levers)


def nothing_measured(cal: Calibration, formula: ScalingPlan, started: float) -> ScalingPlan:
    """Daft's default, with the calibration's record saying the sample reached no UDF."""
    cal.skipped = "no rows reached the UDF in the sample: nothing to measure"
    cal.elapsed_s = round(time.monotonic() - started, 3)
    cal.lines = [f"skipped: {cal.skipped}"]
    default = unmeasured_default(formula, cal.declared_batch_size, cal.skipped)
    return replace(default, calibration=cal.to_dict())


def unmeasured_default(formula: ScalingPlan, declared_batch: int | None, reason: str) -> ScalingPlan:
    """Daft's default when nothing was measured: a plan is only chosen when measurements predict it faster.

    The formula's numbers rest on assumed costs (Daft's scaling guide's), and on the bench an unmeasured
    formula plan ran up to 1.4× slower than Daft's default on small jobs (an explode, a real CPU model), so
    with no measurement the DataFrame is left alone. One exception keeps the planner's batch size: heavy
    rows (the streaming strategy) with no declared batch, where Daft's own batch is a whole morsel (a
    Parquet row group) handed to the UDF at once, which can exceed an actor's memory; B bounds it.
    (A job with fewer than 2 input files per actor is spread instead: see ``calibrated_plan``.)
    """
    batch = declared_batch
    bound = ""
    if batch is None and formula.strategy == "streaming":
        batch = formula.batch_size
        bound = f"; the UDF's batch is bounded at {batch} rows, as the rows are heavy (a whole morsel may not fit)"
    why = f"nothing was measured (calibration: {reason.split(' (')[0]}), so Daft's default is kept{bound}"
    return no_scaling_step(formula, why, udf_batch_size=batch, basis="nothing measured")


def record_rows_run(cal: Calibration, run_rows: int) -> int:
    """A sample run's own rows at the scaling step, with the sampling text saying so when they are not the rows
    asked for: files spread over a read (daftscale.execution.spread_files) hold whole files' rows."""
    if run_rows != cal.sample_rows:
        cal.sampling = cal.sampling.replace(
            f"df.limit({cal.sample_rows})",
            f"files spread over the largest read (about {run_rows:,} rows at the step)",
            1,
        )
    return run_rows


def record_rows_at_udf(cal: Calibration, udf_rows: int, sample_rows: int | None = None) -> tuple[float, int]:
    """Rows reaching the UDF per row at the scaling step, and R at the UDF, from a sample run's UDF rows
    (``sample_rows``: that run's sample, when smaller than the calibration's)."""
    growth = udf_rows / (sample_rows or cal.sample_rows)
    rows_at_udf = max(1, round(cal.rows * growth))
    cal.rows_at_udf_per_row, cal.rows_at_udf = round(growth, 4), rows_at_udf
    return growth, rows_at_udf


def separates(fit: dict[str, float] | None) -> bool:
    """Whether a cost fit pins down both costs: calls of several sizes gave a per-row and a per-call cost above 0.

    A per-call cost of 0 is a fit clamped there (:func:`daftscale.report.fit_udf_cost`), not a measurement:
    every call through Daft costs something, and planned from 0 the formula's B is 1. Seen on the bench's W4:
    the probe's calls of 16 and 32 rows, each decoding 1 MiB per row, fitted 0 ms per call + 5.2 ms per row,
    and B = 1 in tasks of 2 rows took 263 s where the expert's B = 48 took 18 s.

    >>> separates({"seconds_per_row": 0.005, "seconds_per_batch": 0.01}), separates({"seconds_per_row": 0.005,
    ...     "seconds_per_batch": 0.0}), separates(None)
    (True, False, False)
    """
    return fit is not None and fit["seconds_per_row"] > 0 and fit["seconds_per_batch"] > 0


def formula_from(
    data: DataProfile,
    cluster: ClusterSpec,
    kwargs: dict[str, Any],
    fit: dict[str, float] | None,
    calls: list[dict[str, Any]],
    growth: float,
    fragments: float | None,
) -> ScalingPlan:
    """The formula plan with the measured numbers: costs (when the calls separate them), R at the UDF, fragments.

    The declared batch size gives way to the fitted costs (choosing B is what they are for; the default
    run keeps the declared one as the baseline).
    """
    from daftscale.plan import plan as make_plan

    kwargs = planner_options(kwargs)
    options = dict(kwargs)
    memory = fit_udf_memory_per_row(calls)
    if memory:
        options["udf_memory_per_row"] = memory
    if fit is not None and fit["seconds_per_row"] > 0:
        options.pop("batch_size", None)
        options["udf_profile"] = UdfProfile(
            seconds_per_row=fit["seconds_per_row"],
            seconds_per_batch=fit["seconds_per_batch"],
            rows_sampled=sum(int(c["rows"]) for c in calls),
            batches=len(calls),
        )
    try:
        return make_plan(data, cluster, **options, rows_at_udf_per_row=growth, delivered_rows_per_call=fragments)
    except DaftscaleError:
        # Measured numbers the planner refuses (e.g. a batch no memory holds) leave the inputs as declared.
        return make_plan(data, cluster, **kwargs, rows_at_udf_per_row=growth, delivered_rows_per_call=fragments)


def finish(
    cal: Calibration,
    calls: list[dict[str, Any]],
    formula: ScalingPlan,
    calibrated: ScalingPlan,
    chosen: tuple[ScalingPlan, SampleRun] | SimulatedChoice | None,
    why: str,
    started: float,
) -> ScalingPlan:
    """The full-data plan to run, with the calibration's record and the decision.

    ``chosen``: a measured formula plan and its sample run, or the simulator's verdict (which may keep
    Daft's default), or None: Daft's default, for ``why``.
    """
    fit = fit_udf_cost(calls)
    if fit is not None:
        cal.seconds_per_batch, cal.seconds_per_row, cal.fitted_calls = (
            fit["seconds_per_batch"],
            fit["seconds_per_row"],
            len(calls),
        )
    cal.changed = _changes(formula, calibrated) + cal.changed
    if cal.memory_per_row_bytes is None:
        cal.memory_per_row_bytes = fit_udf_memory_per_row(calls)
    cal.elapsed_s = round(time.monotonic() - started, 3)
    cal.lines = _lines(cal)
    record = cal.to_dict()
    predicted: dict[str, float | None] = {r.name: r.predicted_full_s for r in cal.runs}
    declared = cal.declared_batch_size
    if isinstance(chosen, SimulatedChoice):
        predicted.update(chosen.predicted_s())
        if not chosen.scaling_step:
            chosen, why = None, chosen.why
        else:
            because = chosen.why
            decision = {"scaling_step": True, "why": because, "predicted_s": predicted, "basis": chosen.basis}
            return replace(
                calibrated, calibration=record, decision=decision, steps=(*calibrated.steps, f"Calibration: {because}.")
            )
    if chosen is None:
        default = no_scaling_step(formula, why, predicted_s=predicted, udf_batch_size=declared)
        return replace(default, calibration=record, steps=(*formula.steps, f"Calibration: {why}."))
    plan, run = chosen
    baseline = cal.runs[0].predicted_full_s or 0.0
    because = (
        f"measured on a {cal.sample_rows:,}-row sample, the formula plan ({run.scaling_step}, batch {plan.batch_size}) "
        f"was predicted {run.predicted_full_s or 0:.1f} s on all the data against {baseline:.1f} s with no scaling "
        f"step ({baseline / (run.predicted_full_s or math.inf):.2f}×)"
    )
    decision = {"scaling_step": True, "why": because, "predicted_s": predicted, "basis": "measured sample runs"}
    return replace(plan, calibration=record, decision=decision, steps=(*plan.steps, f"Calibration: {because}."))


def _changes(formula: ScalingPlan, calibrated: ScalingPlan) -> list[str]:
    """Which of the plan's numbers the measurements changed, against the uncalibrated formula plan."""
    out = []
    if calibrated.inputs.get("rows") != formula.inputs.get("rows"):
        out.append(f"R: {formula.inputs.get('rows'):,} → {calibrated.inputs.get('rows'):,} (rows at the UDF)")
    if calibrated.batch_size != formula.batch_size:
        out.append(f"B: {formula.batch_size} → {calibrated.batch_size} (from the measured costs and memory)")
    if calibrated.partitions != formula.partitions:
        out.append(f"partitions: {formula.partitions} → {calibrated.partitions}")
    if calibrated.into_batches != formula.into_batches:
        what = " (merges fragments)" if calibrated.coalesce else ""
        out.append(f"into_batches: {formula.into_batches} → {calibrated.into_batches}{what}")
    return out


def _lines(cal: Calibration) -> list[str]:
    # The rows the first sample run had at the step: whole files after a join, not the rows asked for.
    sample_rows = cal.runs[0].sample_rows if cal.runs else cal.sample_rows
    lines = [
        f"sample: {sample_rows:,} of {cal.rows:,} rows ({cal.sampling} at the scaling step) "
        f"on the {cal.runner} runner, "
        f"{len(cal.runs)} run{'s' if len(cal.runs) != 1 else ''}, {cal.elapsed_s:.1f} s"
        + (f" of a {cal.budget_s:.0f} s budget" if cal.budget_s else "")
    ]
    if cal.rows_at_udf_per_row is not None:
        lines.append(
            f"rows reaching the UDF per row at the scaling step: {cal.rows_at_udf_per_row:.3g} "
            f"(R at the UDF ≈ {cal.rows_at_udf or 0:,})"
        )
    if cal.seconds_per_batch is not None and cal.seconds_per_row is not None:
        lines.append(
            f"UDF cost as Daft delivers batches: {cal.seconds_per_batch * 1e3:.1f} ms per call + "
            f"{cal.seconds_per_row * 1e3:.3f} ms per row (fitted over {cal.fitted_calls:,} calls)"
        )
    if cal.memory_per_row_bytes:
        lines.append(f"UDF peak memory per row in the actors: {format_bytes(cal.memory_per_row_bytes)}")
    for run in cal.runs:
        if run.failed:
            lines.append(f"{run.name} ({run.scaling_step}, {batch_words(run.batch_size)}): failed: {run.failed}")
            continue
        lines.append(
            f"{run.name} ({run.scaling_step}, {batch_words(run.batch_size)}): {run.calls:,} calls of "
            f"{run.mean_rows_per_call:.1f} rows on average; {run.wall_s:.2f} s on the sample, "
            f"predicted {run.predicted_full_s or 0:.1f} s on all the data"
        )
    if cal.simulated:
        lines.append(f"decision by simulation: {cal.simulated['why']}")
    lines.append("changed: " + ("; ".join(cal.changed) if cal.changed else "nothing"))
    return lines


__all__ = [
    "Calibration",
    "SampleRun",
    "finish",
    "formula_from",
    "no_scaling_step",
    "nothing_measured",
    "record_rows_at_udf",
    "sampled",
    "separates",
    "summarise",
    "udf_rows_of",
]
