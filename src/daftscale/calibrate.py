"""Calibration: measure the pipeline on a sample, on the real runner, before choosing its plan.

``daftscale run`` (and :func:`daftscale.run.run` with ``plan="auto"``) calls :func:`calibrated_plan`
before it executes. The formula plan is only as good as its inputs, and three of them are known only
once Daft runs the pipeline: the UDF's cost *as Daft delivers batches* (Daft's hand-over, ``to_pylist``
and stacking add per-call cost an in-process profile misses), the rows per call Daft actually delivers
(a join's or shuffle's output reaches the UDF in fragments: ``batch_size`` is only a maximum), and the
rows reaching the UDF per row at the scaling step (explode, filter, join fan-out).

How. Each sample run is the tuner's sampled trial (:class:`daftscale.plan_handle.SampledPlan`: ``df.limit(n)`` at
the scaling step, or ``df.sample(fraction)`` when a join or shuffle comes before it, see
:func:`upstream_shuffles`), with the pipeline's instrumented UDFs, on the same runner and cluster. Every
sample run costs about the query's fixed start (seconds, as much as a short job's plan can win), so as few
run as the decision allows:

- **Nothing shuffles before the scaling step** (a read, per-row steps): Daft's default is the input's
  files and row groups, which the simulator lays out from the data profile. One **cost probe**
  (:func:`cost_probe_plan`: chunks of 1.25 B rows before a UDF of B, so calls come in two sizes) measures
  the UDF's per-call and per-row cost as Daft delivers batches, the rows reaching the UDF per row and its
  peak memory per row. The simulator (:func:`simulated_choice`) then predicts Daft's default and the
  formula plan made from those costs on all the data; the plan is chosen only when predicted
  ``SIMULATED_DECISION_MARGIN`` faster, else Daft's default is kept.
- **A join or shuffle before it**: the pieces Daft hands the UDF depend on that operator, so Daft's
  default itself runs on the sample first (its fragments come in many sizes, which also separates the
  costs). A clear simulated verdict decides; a close one measures the formula plan (and, if it is handed
  fragments, the plan that merges them) within the budget, and each run predicts its wall time on all
  the data (:func:`daftscale.tune.extrapolated_wall_s`): the plan must be ``DECISION_MARGIN`` faster.
- A sample run whose UDF **runs out of memory** (Daft's default's whole morsels, or the probe's B) is
  followed by one run at a small batch, which measures the peak memory per row in the actors
  (:func:`daftscale.udf.reset_peak_rss`); B is then bounded by the actor's memory.

"No scaling step" keeps the pipeline's own UDF settings: its declared batch size, or Daft's own
(:attr:`daftscale.plan.ScalingPlan.udf_batch_size` is None), so it really is Daft's default.

Cost: each run costs about a sample's wall time, which includes all the work before the scaling step that
the sample does not cut (a limit or sample after a join still runs the join in full). ``auto`` skips
calibration for a job too small to sample (the sample would be a large share of it), and skips a further
run when it would take calibration past ``BUDGET_SHARE`` of the predicted job (within
``MIN_BUDGET_S``..``MAX_BUDGET_S``); ``SECONDS`` sets the budget and calibrates whatever the size.
Declared UDF costs (a UDF profile) or a given plan skip it.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from daftscale.calibrate_predict import (
    SimulatedChoice,
    batch_words,
    cost_probe_plan,
    daft_default_as_plan,
    simulated_choice,
)
from daftscale.cluster import ClusterSpec
from daftscale.errors import ConfigError, DaftscaleError, RunError
from daftscale.plan import FRAGMENTED_SHARE, ScalingPlan, describe_step
from daftscale.plan_handle import SampledPlan
from daftscale.profile import DataProfile, UdfProfile
from daftscale.report import RunReport, fit_udf_cost, fit_udf_memory_per_row
from daftscale.tune import extrapolated_wall_s

# Share of the rows at the scaling step the calibration sample takes, and its floor in full batches per
# actor (two each, so every actor runs, and a batch's cost is seen more than once).
SAMPLE_FRACTION = 0.05
MIN_SAMPLE_BATCHES_PER_ACTOR = 2

# "auto" calibrates only when the sample is at most this share of the rows: a job not ten times its sample
# is predicted tiny, and measuring it would cost a large part of running it.
MAX_AUTO_SAMPLE_SHARE = 0.1

# The default budget: this share of the job's predicted time (from the first run), within the floor and
# ceiling. The floor lets a short job still measure both candidates (a sample run costs the query's fixed
# start, seconds on a small cluster); the ceiling bounds calibration on a long job.
BUDGET_SHARE = 0.15
MIN_BUDGET_S = 20.0
MAX_BUDGET_S = 300.0

# The formula plan must be predicted this much faster than Daft's default to be chosen. Wider than the
# tuner's 5 %: the default runs first, so it alone pays a cold start (workers, file cache) on the sample.
DECISION_MARGIN = 0.10

# Operators before the scaling step whose output is cut into pieces unrelated to the source's files: a
# df.limit sample there keeps the head partitions whole, which hides how a repartition of their many
# pieces fragments the UDF's batches. The formula plan's run on such pipelines samples with
# df.sample(fraction), which keeps every partition (smaller), so a sampled repartition hands the UDF
# pieces of the same size as the full run's. (Daft's default, with no repartition, is sampled by the head:
# there the partitions' own size is what the UDF gets.)
SHUFFLING_OPS = frozenset({"Join", "Repartition", "Aggregate", "Distinct", "Pivot", "Concat", "Sort"})

# When Daft's default run cannot separate the UDF's costs (its calls are all about one size), the formula
# plan is first measured at this multiple of the batch size, so two sizes have run (the tuner's widest).
PROBE_BATCH_MULTIPLE = 4

# After Daft's default ran out of memory on the sample, the next sample run's batch is this many times
# smaller than both B and the smallest call that failed: small enough to fit, big enough to measure.
OOM_PROBE_DIVISOR = 8

# Calls that finished before an out-of-memory failure needed to take their peak memory per row as measured.
MIN_MEMORY_CALLS = 2

# Longest failure text kept in a sample run's record.
MAX_FAILURE_CHARS = 300

# Most runs of formula plans one calibration makes (after Daft's default): a probe at another batch size or
# the plan from the costs, then the plan that merges fragments.
MAX_FORMULA_RUNS = 3

CALIBRATE_HELP = "auto (default: measure on a sample unless the job is tiny), off, or a budget in SECONDS"


def parse_calibrate(value: str | float | int | None) -> str | float:
    """``"auto"``, ``"off"`` or a positive budget in seconds.

    >>> parse_calibrate("auto"), parse_calibrate("OFF"), parse_calibrate("30"), parse_calibrate(None)
    ('auto', 'off', 30.0, 'auto')
    """
    if value is None:
        return "auto"
    if isinstance(value, str) and value.strip().lower() in ("auto", "off"):
        return value.strip().lower()
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"--calibrate must be auto, off or a number of seconds above 0, got {value!r}: e.g. 60")
    return seconds


def _full_call_rows(batch_size: int, sample_rows_at_udf: float, concurrency: int) -> float:
    """The rows a full call can carry in a sample run: B, or fewer when the sample has fewer rows per actor.

    >>> _full_call_rows(64, 1000, 2), _full_call_rows(4441, 1000, 2)
    (64, 500.0)
    """
    return max(1.0, min(batch_size, sample_rows_at_udf / max(concurrency, 1)))


def sample_rows_for(rows: int, concurrency: int, batch_size: int) -> int:
    """Rows the calibration sample takes: ``SAMPLE_FRACTION`` of the rows, at least two batches per actor.

    >>> sample_rows_for(1_000_000, 16, 64), sample_rows_for(20_000, 4, 64), sample_rows_for(300, 4, 64)
    (50000, 1000, 300)
    """
    wanted = max(math.ceil(rows * SAMPLE_FRACTION), MIN_SAMPLE_BATCHES_PER_ACTOR * concurrency * batch_size)
    return max(1, min(rows, wanted))


def skip_reason(calibrate: str | float, kwargs: dict[str, Any], rows: int, sample_rows: int) -> str | None:
    """Why calibration does not run for this job (``None``: it runs).

    >>> skip_reason("auto", {}, 4_000, 512)
    'the job is tiny: a 512-row sample would be 13% of its 4,000 rows (run with --calibrate SECONDS to measure anyway)'
    >>> skip_reason("auto", {}, 100_000, 5_000) is None
    True
    """
    if calibrate == "off":
        return "off (--calibrate off)"
    if kwargs.get("udf_profile") is not None:
        return "the pipeline declares its UDF costs (a UDF profile)"
    if calibrate == "auto" and sample_rows > MAX_AUTO_SAMPLE_SHARE * rows:
        return (
            f"the job is tiny: a {sample_rows:,}-row sample would be {sample_rows / rows:.0%} of its {rows:,} rows "
            "(run with --calibrate SECONDS to measure anyway)"
        )
    return None


def upstream_shuffles(df: Any) -> bool:
    """True when an operator of ``SHUFFLING_OPS`` comes before the scaling step (``df`` is the DataFrame there)."""
    try:
        text = df._builder.pretty_print(simple=True)
    except Exception:  # a Daft without this private API: sample by the head, as the tuner does
        return False
    return bool(set(re.findall(r"\*\s+([A-Za-z]+)", text)) & SHUFFLING_OPS)


def sampled(plan: ScalingPlan, rows: int, sample_rows: int, *, by_fraction: bool) -> SampledPlan:
    """``plan`` on a sample of about ``sample_rows`` of the ``rows`` at the scaling step (``rows`` there, not at
    the UDF, so partitions scale with the sample): the tuner's ``df.limit`` sample, or ``df.sample(fraction)``."""
    return SampledPlan.of(
        replace(plan, inputs={**plan.inputs, "rows": rows}),
        sample_rows,
        fraction=sample_rows / rows if by_fraction else None,
    )


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


def _udf_rows(report: RunReport) -> int:
    return sum(int(c.get("rows") or 0) for c in report.udf_calls)


def _summarise(
    name: str, plan: ScalingPlan, report: RunReport, elapsed: float, sample: int, udf_rows_full: int
) -> SampleRun:
    udf_rows = _udf_rows(report)
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
    """``plan`` with the decision "no scaling step": ``apply`` leaves the DataFrame alone (Daft's default)."""
    levers = {
        **plan.levers,
        "partitions": "not used: no scaling step (Daft's default partitions)",
        "into_batches": "not used: no scaling step",
    }
    return replace(plan, decision={"scaling_step": False, "why": why, **decision}, levers=levers)


def calibrated_plan(
    data: DataProfile,
    cluster: ClusterSpec,
    kwargs: dict[str, Any],
    *,
    runner: str,
    calibrate: str | float,
    run_sample: Callable[[SampledPlan], RunReport],
    scaling_input: Any = None,
    upstream_shuffle: bool | None = None,
    say: Callable[[str], None] = lambda _text: None,
) -> ScalingPlan:
    """The plan to run: the formula plan made from measurements, or Daft's default, whichever is predicted faster.

    ``upstream_shuffle``: whether a join or shuffle comes before the scaling step (None: read from
    ``scaling_input`` by :func:`upstream_shuffles`); it chooses between the cost probe and Daft's default
    as the first sample run.

    ``run_sample(plan)`` runs the pipeline with a sampled plan (:func:`sampled`) on the runtime at hand
    and returns its report; ``scaling_input`` (the DataFrame at the scaling step) chooses how to sample
    (:func:`upstream_shuffles`). With calibration skipped, the formula plan as ``daftscale plan`` makes it
    (its JSON unchanged when ``calibrate`` is ``"off"``).
    """
    from daftscale.plan import plan as make_plan

    started = time.monotonic()
    formula = make_plan(data, cluster, **kwargs)
    rows = data.rows
    sample = sample_rows_for(rows, formula.concurrency, formula.batch_size)
    reason = skip_reason(calibrate, kwargs, rows, sample)
    if reason is not None:
        if calibrate == "off":
            return formula
        note = Calibration(sample_rows=0, rows=rows, runner=runner, skipped=reason, lines=[f"skipped: {reason}"])
        return replace(formula, calibration=note.to_dict())
    if upstream_shuffle is None:
        upstream_shuffle = scaling_input is not None and upstream_shuffles(scaling_input)
    by_fraction = upstream_shuffle
    budget = float(calibrate) if not isinstance(calibrate, str) else None
    how = f"df.limit({sample})" + (f", df.sample({sample / rows:.3g}) for the formula plan" if by_fraction else "")
    cal = Calibration(
        sample_rows=sample,
        rows=rows,
        runner=runner,
        budget_s=budget,
        sampling=how,
        declared_batch_size=kwargs.get("batch_size"),
    )
    say(f"calibrating on {sample:,} of {rows:,} rows ({how}): Daft's default, then the formula plan…")

    declared_batch = kwargs.get("batch_size")
    default = no_scaling_step(formula, "calibration baseline", udf_batch_size=declared_batch)
    if not by_fraction:
        # Nothing before the scaling step cuts the rows into pieces of its own: Daft's default is the input's
        # files and row groups, which the simulator lays out from the data profile. One cost probe measures
        # what it needs; Daft's default need not run.
        return _calibrate_by_cost_probe(data, cluster, kwargs, formula, cal, run_sample, started)

    # 1. Daft's default: no scaling step, the pipeline's own batch size and concurrency.
    t0 = time.monotonic()
    # By the head always: a fraction sample would shrink every partition, and with no scaling step the UDF
    # gets the partitions as they are (measured: 3.4 rows per call on a 5 % sample, 47 on all the data).
    try:
        default_report = run_sample(sampled(default, rows, sample, by_fraction=False))
    except RunError as exc:
        if not exc.out_of_memory:
            raise
        # Daft's default does not fit the UDF's memory: it is no candidate, and the run must find a batch that fits.
        return _after_default_ran_out_of_memory(
            data, cluster, kwargs, formula, cal, exc, time.monotonic() - t0, sampled_run=run_sample, started=started
        )
    run_s = time.monotonic() - t0
    udf_rows = _udf_rows(default_report)
    if udf_rows == 0:
        return _nothing_measured(cal, formula, started)
    growth, rows_at_udf = _record_rows_at_udf(cal, udf_rows)
    first = _summarise("Daft's default", default, default_report, run_s, sample, rows_at_udf)
    cal.runs.append(first)
    if budget is None:
        budget = min(MAX_BUDGET_S, max(MIN_BUDGET_S, BUDGET_SHARE * (first.predicted_full_s or 0.0)))
        cal.budget_s = round(budget, 1)
    calls = list(default_report.udf_calls)

    # 2. The formula plan from what the default run measured; 3. merged fragments if it was handed them.
    fit = fit_udf_cost(calls)
    # A sample cannot fill calls bigger than its own rows per actor: fragments are calls short of what it could.
    sample_at_udf = sample * growth
    full = _full_call_rows(formula.batch_size, sample_at_udf, formula.concurrency)
    fragments = first.mean_rows_per_call if first.mean_rows_per_call < FRAGMENTED_SHARE * full else None
    # Calls of one size (or nearly) do not separate per-call from per-row cost: the formula plan is then
    # measured at PROBE_BATCH_MULTIPLE × B first (the tuner's widest multiple), and planned again from both runs.
    probing = not _separates(fit)
    options = {**kwargs, "batch_size": PROBE_BATCH_MULTIPLE * formula.batch_size} if probing else kwargs
    candidate = _formula_from(data, cluster, options, None if probing else fit, calls, growth, fragments)
    name = f"formula plan, batch ×{PROBE_BATCH_MULTIPLE}" if probing else "formula plan"

    # The simulator, fitted to Daft's default run, predicts both candidates on all the data. A clear verdict
    # decides without another sample run (each costs about the query's fixed start, seconds: on a short job
    # as much as the plan could win); a close one is measured when the budget allows.
    if not probing:
        verdict = simulated_choice(data, cluster, candidate, default_report, declared_batch, first.predicted_full_s)
        if verdict is not None:
            cal.simulated = verdict.to_dict()
            if verdict.clear:
                return _finish(cal, calls, formula, candidate, verdict, verdict.why, started)

    measured: list[tuple[ScalingPlan, SampleRun]] = []
    while candidate is not None:
        spent = time.monotonic() - started
        if spent + run_s > budget:
            cal.changed.append(
                f"no budget left to measure {describe_step(candidate)} ({spent:.1f} s spent of {budget:.0f} s, "
                f"a sample run takes about {run_s:.1f} s)"
            )
            break
        t0 = time.monotonic()
        report = run_sample(sampled(candidate, rows, sample, by_fraction=by_fraction))
        run = _summarise(name, candidate, report, time.monotonic() - t0, sample, rows_at_udf)
        cal.runs.append(run)
        measured.append((candidate, run))
        calls += report.udf_calls
        fit = fit_udf_cost(calls)
        last, candidate = measured[-1][0], None
        full = _full_call_rows(last.batch_size, sample_at_udf, last.concurrency)
        handed_fragments = run.calls and run.mean_rows_per_call < FRAGMENTED_SHARE * full
        if probing:
            probing = False
            if _separates(fit):
                planned = _formula_from(data, cluster, kwargs, fit, calls, growth, fragments)
                if describe_step(planned) != describe_step(last) or planned.batch_size != last.batch_size:
                    candidate, name = planned, "formula plan (measured costs)"
        elif handed_fragments and not last.coalesce and len(measured) < MAX_FORMULA_RUNS:
            merged = _formula_from(data, cluster, kwargs, fit, calls, growth, run.mean_rows_per_call)
            candidate, name = (merged, "formula plan, fragments merged") if merged.coalesce else (None, name)

    timed = [(p, r) for p, r in measured if r.predicted_full_s]
    best = min(timed, key=lambda pr: pr[1].predicted_full_s or math.inf) if timed else None
    if (
        best is not None
        and first.predicted_full_s
        and ((best[1].predicted_full_s or math.inf) * (1 + DECISION_MARGIN) < first.predicted_full_s)
    ):
        return _finish(cal, calls, formula, best[0], best, "", started)
    own = batch_words(declared_batch)
    if best is None:
        why = "there was no budget left to measure the formula plan: Daft's default is kept, as it was measured"
        if cal.simulated:
            why = f"{cal.simulated['why']}; {why}"
    else:
        why = (
            f"the formula plan ({best[1].scaling_step}, batch {best[0].batch_size}) was predicted "
            f"{best[1].predicted_full_s or 0:.1f} s on all the data against Daft's default's "
            f"{first.predicted_full_s or 0:.1f} s "
            f"(no scaling step, {own}), measured on a {sample:,}-row sample: not "
            f"{DECISION_MARGIN:.0%} faster, so Daft's default is kept"
        )
    return _finish(cal, calls, formula, measured[-1][0] if measured else formula, None, why, started)


def _calibrate_by_cost_probe(
    data: DataProfile,
    cluster: ClusterSpec,
    kwargs: dict[str, Any],
    formula: ScalingPlan,
    cal: Calibration,
    run_sample: Callable[[SampledPlan], RunReport],
    started: float,
) -> ScalingPlan:
    """One sample run of :func:`cost_probe_plan`, then the simulator's verdict between Daft's default and the
    formula plan made from the measured costs; Daft's default is kept unless the verdict is clearly the plan."""
    rows, sample = data.rows, cal.sample_rows
    declared_batch = kwargs.get("batch_size")
    probe = cost_probe_plan(formula, formula.batch_size)
    name = f"cost probe (calls of {probe.batch_size} rows and the rest of {probe.into_batches}-row chunks)"
    t0 = time.monotonic()
    try:
        report = run_sample(sampled(probe, rows, sample, by_fraction=False))
    except RunError as exc:
        if not exc.out_of_memory:
            raise
        return _after_default_ran_out_of_memory(
            data, cluster, kwargs, formula, cal, exc, time.monotonic() - t0, sampled_run=run_sample, started=started,
            failed_name=f"the cost probe (batch {probe.batch_size})", failed_plan=probe,
        )  # fmt: skip
    udf_rows = _udf_rows(report)
    if udf_rows == 0:
        return _nothing_measured(cal, formula, started)
    growth, rows_at_udf = _record_rows_at_udf(cal, udf_rows)
    run = _summarise(name, probe, report, time.monotonic() - t0, sample, rows_at_udf)
    cal.runs.append(run)
    calls = list(report.udf_calls)
    fit = fit_udf_cost(calls)
    candidate = _formula_from(data, cluster, kwargs, fit if _separates(fit) else None, calls, growth, None)
    verdict = (
        simulated_choice(data, cluster, candidate, report, declared_batch, None, measured_fragments=False)
        if _separates(fit)
        else None
    )
    if verdict is None:
        why = (
            "the cost probe did not separate the UDF's per-call from its per-row cost, so no plan is predicted "
            "faster: Daft's default is kept"
        )
        return _finish(cal, calls, formula, candidate, None, why, started)
    cal.simulated = verdict.to_dict()
    if verdict.clear:
        return _finish(cal, calls, formula, candidate, verdict, verdict.why, started)
    return _finish(cal, calls, formula, candidate, None, f"{verdict.why}: Daft's default is kept", started)


def _after_default_ran_out_of_memory(
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
    failed_plan = failed_plan or no_scaling_step(
        formula, "calibration baseline", udf_batch_size=kwargs.get("batch_size")
    )
    failed_rows = [int(c.get("rows") or 0) for c in error.failed_calls if c.get("rows")]
    smallest_failed = min(failed_rows, default=formula.batch_size)
    declared = kwargs.get("batch_size")
    first = min(error.failed_calls, key=lambda c: float(c.get("start") or 0.0), default={})
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
        planned = _formula_from(data, cluster, kwargs, fit if _separates(fit) else None, calls, 1.0, None)
        why = (
            f"{oom}; the {len(calls)} calls that finished before (up to {max(int(c['rows']) for c in calls)} rows) "
            f"measured {early_memory / 2**20:.2f} MiB per row at the UDF's peak, so B = {planned.batch_size} fits "
            "the actor's memory (rows reaching the UDF per row not measured: taken as 1)"
        )
        record = _finish(cal, calls, formula, planned, (planned, failed_run), "", started)
        decision = {**(record.decision or {}), "why": why, "basis": f"{what} ran out of memory on the sample"}
        return replace(record, decision=decision, steps=(*planned.steps, f"Calibration: {why}."))
    probe_batch = max(1, min(formula.batch_size, smallest_failed) // OOM_PROBE_DIVISOR)
    probe = _formula_from(data, cluster, {**kwargs, "batch_size": probe_batch}, None, [], 1.0, None)
    t0 = time.monotonic()
    try:
        report = sampled_run(sampled(probe, rows, sample, by_fraction=False))
    except RunError as exc:
        if exc.out_of_memory:
            raise RunError(
                f"the UDF ran out of memory on the calibration sample at a batch of {probe_batch} rows as well as "
                f"with Daft's default: give the UDF more memory (--udf-memory, fewer actors per node) ({exc})"
            ) from exc
        raise
    calls = list(report.udf_calls)
    udf_rows = _udf_rows(report)
    growth, rows_at_udf = _record_rows_at_udf(cal, udf_rows or sample)  # no rows at the UDF: taken as 1 per row
    run = _summarise(f"small batch ({probe_batch} rows)", probe, report, time.monotonic() - t0, sample, rows_at_udf)
    cal.runs.append(run)
    memory = fit_udf_memory_per_row(calls)
    cal.memory_per_row_bytes = memory
    fit = fit_udf_cost(calls)
    options = kwargs if memory else {**kwargs, "batch_size": probe_batch}
    planned = _formula_from(data, cluster, options, fit if _separates(fit) else None, calls, growth, None)
    if memory:
        why = (
            f"{oom}; a batch of {probe_batch} rows measured {memory / 2**20:.2f} MiB per row at the UDF's peak, "
            f"so B = {planned.batch_size} fits the actor's memory"
        )
    else:
        why = f"{oom}; the UDF's memory is not visible in the actors (a GPU's?), so B = {probe_batch}, measured to fit"
    record = _finish(cal, calls, formula, planned, (planned, run), "", started)
    decision = {**(record.decision or {}), "why": why, "basis": f"{what} ran out of memory on the sample"}
    return replace(record, decision=decision, steps=(*planned.steps, f"Calibration: {why}."))


def _nothing_measured(cal: Calibration, formula: ScalingPlan, started: float) -> ScalingPlan:
    """The formula plan, with the calibration's record saying the sample reached no UDF."""
    cal.skipped = "no rows reached the UDF in the sample: nothing to measure"
    cal.elapsed_s = round(time.monotonic() - started, 3)
    cal.lines = [f"skipped: {cal.skipped}"]
    return replace(formula, calibration=cal.to_dict())


def _record_rows_at_udf(cal: Calibration, udf_rows: int) -> tuple[float, int]:
    """Rows reaching the UDF per row at the scaling step, and R at the UDF, from a sample run's UDF rows."""
    growth = udf_rows / cal.sample_rows
    rows_at_udf = max(1, round(cal.rows * growth))
    cal.rows_at_udf_per_row, cal.rows_at_udf = round(growth, 4), rows_at_udf
    return growth, rows_at_udf


def _separates(fit: dict[str, float] | None) -> bool:
    """Whether a cost fit pins down both costs (calls of several sizes gave a per-row cost above 0)."""
    return fit is not None and fit["seconds_per_row"] > 0


def _formula_from(
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


def _finish(
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
    lines = [
        f"sample: {cal.sample_rows:,} of {cal.rows:,} rows ({cal.sampling} at the scaling step) "
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
        lines.append(f"UDF peak memory per row in the actors: {cal.memory_per_row_bytes / 2**20:.3f} MiB")
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
    "CALIBRATE_HELP",
    "Calibration",
    "SampleRun",
    "SimulatedChoice",
    "calibrated_plan",
    "cost_probe_plan",
    "daft_default_as_plan",
    "no_scaling_step",
    "parse_calibrate",
    "sample_rows_for",
    "simulated_choice",
    "skip_reason",
    "upstream_shuffles",
]
