"""What calibration predicts: the cost probe's plan, and Daft's default against the formula plan, simulated.

:mod:`daftscale.calibrate` runs the sample runs and decides; this module holds the two pieces that are
pure functions of plans and measurements, so they can be tested without Ray:

- :func:`cost_probe_plan`, the one sample run that separates a UDF's per-call from its per-row cost;
- :func:`simulated_choice`, which fits the simulator's costs to a sample run's report
  (:func:`daftscale.simulate.costs_from_report`), lays Daft's default out as a plan
  (:func:`daft_default_as_plan`: one task per input file, Daft's own batch) and predicts it and the formula
  plan on all the data, giving a :class:`SimulatedChoice`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.errors import DaftscaleError
from daftscale.plan import ScalingPlan, describe_step
from daftscale.profile import DataProfile
from daftscale.report import RunReport, fit_udf_memory_per_row

# A decision from the simulator alone (no sample run of the formula plan) needs the formula plan predicted
# this much faster than Daft's default after the actor pool's start: twice the measured margin, for the
# simulator's own error (its held-out predictions are within about 25 %).
SIMULATED_DECISION_MARGIN = 0.20

# The simulator is trusted for a decision only when its prediction of Daft's default on all the data is
# within this factor of the default sample run's own extrapolation (both say how Daft's default scales).
SIMULATOR_AGREEMENT = 2.0

# The cost probe's chunks before the UDF, in batches: a full batch and a quarter batch per chunk.
COST_PROBE_CHUNK = 1.25

# Actors of the cost probe's pool (at most the plan's).
COST_PROBE_ACTORS = 2

# Chunks each probe actor gets at most: each gives one call of B rows and one of the remainder, so six give
# twelve calls in two sizes per actor, enough to fit a line through. More rows measure nothing more, and cost
# their work on the probe's small pool: on the bench's W2 (5 % sample, 1,200 rows of 4 KiB blobs at 2 ms per
# row) the probe ran 5.4 s, 2.6 s of it the pool's start.
COST_PROBE_CHUNKS_PER_ACTOR = 6

# ... and fewer, down to COST_PROBE_MIN_CHUNKS_PER_ACTOR (six calls in two sizes), when six would make the probe's
# work on each of its actors more than this share of what each actor does in the whole job: the probe's cost is
# bounded by the job's size, not only by the fit's needs. On the bench's W4 (12,000 rows on 8 actors, 4.6 ms per
# row) six chunks of 80 rows were 960 rows on 2 actors, a third of each actor's job; the probe took 4.5 s.
COST_PROBE_SHARE_OF_ACTOR_ROWS = 0.1
COST_PROBE_MIN_CHUNKS_PER_ACTOR = 3


@dataclass
class SimulatedChoice:
    """The simulator's verdict between Daft's default and the formula plan, fitted to Daft's default sample run.

    ``clear`` when the verdict needs no further sample run: the formula plan predicted at least
    ``SIMULATED_DECISION_MARGIN`` faster after the actor pool's start (``scaling_step``), or no faster at all
    (Daft's default kept).
    """

    default_s: float | None
    formula_s: float | None
    default_oom: bool
    formula_oom: bool
    scaling_step: bool
    clear: bool
    why: str
    basis: str = "simulated with the costs fitted to the first sample run"
    # The fitted costs both predictions used (daftscale.simulate.Costs.to_dict), for the record.
    costs: dict[str, Any] = field(default_factory=dict)

    def predicted_s(self) -> dict[str, float | None]:
        return {"Daft's default (simulated)": self.default_s, "formula plan (simulated)": self.formula_s}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cost_probe_plan(formula: ScalingPlan, batch_size: int) -> ScalingPlan:
    """The plan of a cost probe: ``into_batches`` of ``COST_PROBE_CHUNK`` × ``batch_size`` rows before a UDF of
    ``batch_size``, so that Daft calls the UDF with full batches and with the chunks' remainders (measured on
    Daft 0.7.26's Ray runner: chunks of 80 rows gave calls of 64 and 16 rows, in equal numbers) and the two
    sizes separate the per-call from the per-row cost in one run."""
    chunk = max(batch_size + 1, math.ceil(COST_PROBE_CHUNK * batch_size))
    return _streaming(
        formula,
        into_batches=chunk,
        batch_size=batch_size,
        # A small pool: the probe measures per-actor costs, and its start is what a sample run mostly pays
        # (measured under load here: 8 actors ready after 22 s, 2 after 8-15 s).
        concurrency=min(formula.concurrency, COST_PROBE_ACTORS),
        coalesce=True,
    )


def cost_probe_rows(sample_rows: int, formula: ScalingPlan) -> int:
    """Rows the cost probe takes: the calibration sample, cut to ``COST_PROBE_CHUNKS_PER_ACTOR`` chunks per probe
    actor, or fewer (not under ``COST_PROBE_MIN_CHUNKS_PER_ACTOR``) so that each probe actor's rows are at most
    ``COST_PROBE_SHARE_OF_ACTOR_ROWS`` of each actor's rows in the job.

    >>> from daftscale import ClusterSpec, plan
    >>> from daftscale.profile import profile_numbers
    >>> formula = plan(profile_numbers(38_400, 47), ClusterSpec(nodes=4), concurrency=8)
    >>> cost_probe_rows(1_920, formula), cost_probe_rows(300, formula)
    (960, 300)
    >>> cost_probe_rows(1_024, plan(profile_numbers(12_000, 47), ClusterSpec(nodes=4), concurrency=8))
    480
    """
    probe = cost_probe_plan(formula, formula.batch_size)
    chunk = int(probe.into_batches or 1)
    chunks = COST_PROBE_CHUNKS_PER_ACTOR
    rows = formula.inputs.get("rows")
    if rows:
        share = math.ceil(COST_PROBE_SHARE_OF_ACTOR_ROWS * float(rows) / formula.concurrency / chunk)
        chunks = max(COST_PROBE_MIN_CHUNKS_PER_ACTOR, min(chunks, share))
    return min(sample_rows, chunks * probe.concurrency * chunk)


# Planner options key of a plain script's own batch size (its ``@daft.method.batch(batch_size=...)``): the batch
# Daft's default runs with, as a pipeline's declared ``batch_size`` is, but not one the formula plan is made
# with (for a script, choosing B is the planner's). Calibration reads it (declared_batch) and never hands it to
# the planner (planner_options).
SCRIPT_BATCH_KEY = "script_batch_size"


def declared_batch(kwargs: dict[str, Any]) -> int | None:
    """The batch Daft's default runs the UDF with: the pipeline's declared ``batch_size``, else a plain script's own.

    >>> declared_batch({"batch_size": 16}), declared_batch({SCRIPT_BATCH_KEY: 64}), declared_batch({})
    (16, 64, None)
    """
    return kwargs.get("batch_size") or kwargs.get(SCRIPT_BATCH_KEY)


def planner_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` for :func:`daftscale.plan.plan`: without a script's own batch, which only Daft's default uses."""
    return {key: value for key, value in kwargs.items() if key != SCRIPT_BATCH_KEY}


def batch_words(declared_batch: int | None) -> str:
    return f"batch {declared_batch}" if declared_batch else "Daft's own batch"


def daft_default_as_plan(formula: ScalingPlan, data: DataProfile, declared_batch: int | None) -> ScalingPlan:
    """Daft's default as a plan the simulator runs: no scaling step, one task per input file, and the UDF's
    batch the declared one or Daft's own (each morsel whole: a Parquet row group, else the file's rows)."""
    rows = int(formula.inputs.get("rows") or data.rows)
    if declared_batch:
        batch = int(declared_batch)
    elif data.row_groups:
        batch = math.ceil(rows / data.row_groups)
    else:
        batch = math.ceil(rows / max(1, data.files))
    return _streaming(formula, into_batches=None, batch_size=max(1, min(batch, rows)), coalesce=False, predicted=None)


def _streaming(formula: ScalingPlan, *, into_batches: int | None, batch_size: int, **changes: Any) -> ScalingPlan:
    """``formula`` as a streaming plan (no partition step), with no calibration record or decision of its own."""
    return replace(
        formula,
        strategy="streaming",
        partitions=None,
        partition_op=None,
        partition_keys=(),
        into_batches=into_batches,
        partition_bytes_target=None,
        batch_size=batch_size,
        decision=None,
        calibration=None,
        **changes,
    )


def simulated_choice(
    data: DataProfile,
    cluster: ClusterSpec,
    candidate: ScalingPlan,
    default_report: RunReport,
    declared_batch: int | None,
    measured_default_s: float | None,
    *,
    measured_fragments: bool = True,
) -> SimulatedChoice | None:
    """Daft's default against ``candidate`` on all the data, both simulated with the costs fitted to Daft's
    default sample run (:func:`daftscale.simulate.costs_from_report`); None when the simulator cannot fit them.

    Both predictions share every fitted cost (start-up, per-task, the UDF's per call and per row, the
    fragments Daft delivered), so their ratio is what the decision reads. The candidate is simulated with
    full batches when it merges fragments (``into_batches`` before the UDF does). ``measured_fragments``
    False: the report's short calls were the cost probe's own remainders, not fragments Daft delivers.
    """
    from daftscale.simulate import costs_from_report, simulate

    # Both plans laid out on the input's own files, when the footers listed them and the rows at the UDF are
    # the rows read (Daft's default runs one task per file: the largest file's finishes last).
    if data.file_rows and int(candidate.inputs.get("rows") or 0) == sum(data.file_rows):
        candidate = replace(candidate, inputs={**candidate.inputs, "file_rows": list(data.file_rows)})
    try:
        costs = costs_from_report(default_report.to_dict())
        if not measured_fragments:
            costs = replace(costs, delivered_rows_per_call=None)
        memory = fit_udf_memory_per_row(default_report.udf_calls)
        if memory:
            costs = replace(costs, udf_memory_per_row=memory)
        default_plan = daft_default_as_plan(candidate, data, declared_batch)
        default = simulate(default_plan, cluster, costs=costs)
        candidate_costs = replace(costs, delivered_rows_per_call=None) if candidate.coalesce else costs
        formula = simulate(candidate, cluster, costs=candidate_costs)
    except DaftscaleError:
        return None
    step = f"{describe_step(candidate)}, batch {candidate.batch_size}"
    verdict = _verdict(default, formula, step, batch_words(declared_batch), measured_default_s)
    if (
        costs.task_overhead_s > 0
        and not verdict.scaling_step
        and not (default.oom or formula.oom)
        and formula.makespan_s < default.makespan_s
    ):
        # The per-task cost comes from one lead (the pool ready → the first call), which on a loaded machine
        # also holds one-off latency (actors still starting): on the bench's W2 it was fitted at 0.0 s in most
        # runs and 1.1-1.6 s in others, where the formula plan's 96 tasks ran as fast as ever (a 12-15 s
        # query) but the verdict kept Daft's default (a 29-32 s query). The plan is chosen when it is clearly
        # faster without that cost and still faster with it.
        try:
            lean = [simulate(p, cluster, costs=replace(c, task_overhead_s=0.0))
                    for p, c in ((default_plan, costs), (candidate, candidate_costs))]  # fmt: skip
        except DaftscaleError:
            lean = []
        second = _verdict(*lean, step, batch_words(declared_batch), measured_default_s) if lean else None
        if second is not None and second.scaling_step:
            with_cost = (
                f"; with the {costs.task_overhead_s:.2f} s per task fitted to the sample's first task it is still "
                f"faster ({formula.makespan_s:.1f} s against {default.makespan_s:.1f} s)"
            )
            verdict = replace(second, why=second.why + with_cost)
    fitted = ("startup_s", "task_overhead_s", "dispatch_s", "seconds_per_batch", "seconds_per_row", "tail_s")
    return replace(verdict, costs={name: getattr(costs, name) for name in fitted} | {"source": costs.source})


def _verdict(default: Any, formula: Any, step: str, own: str, measured_default_s: float | None) -> SimulatedChoice:
    """The decision from the two simulations (:class:`daftscale.simulate.SimulationResult`)."""
    default_s, formula_s = round(default.makespan_s, 2), round(formula.makespan_s, 2)
    head = f"simulated from the sample run's measured costs: the formula plan ({step})"
    if formula.oom:
        return SimulatedChoice(
            default_s, None, default.oom, True, False, not default.oom,
            f"{head} runs out of memory ({formula.verdict}): Daft's default is kept",
        )  # fmt: skip
    if default.oom:
        return SimulatedChoice(
            None, formula_s, True, False, True, True,
            f"{head} takes {formula_s:.1f} s on all the data; Daft's default ({own}) runs out of memory",
        )  # fmt: skip
    if measured_default_s and not (
        1 / SIMULATOR_AGREEMENT <= default.makespan_s / measured_default_s <= SIMULATOR_AGREEMENT
    ):
        return SimulatedChoice(
            default_s, formula_s, False, False, False, False,
            f"the simulator predicts Daft's default at {default_s:.1f} s but its sample run extrapolates to "
            f"{measured_default_s:.1f} s: not trusted for the decision",
        )  # fmt: skip
    default_makespan = default.makespan_s
    versus = f"{formula_s:.1f} s on all the data against {default_s:.1f} s for Daft's default (no scaling step, {own})"
    if measured_default_s and measured_default_s < default_makespan:
        # Daft's default is held to the faster of the two: the simulator lays out an input whose files it does
        # not know (a join's output) as one task, and over a join of 300 small files predicted 13.1 s where the
        # sample run extrapolated 6.6 s (and the kept default took 5.7-6.8 s).
        default_makespan, default_s = measured_default_s, round(measured_default_s, 2)
        versus = (
            f"{formula_s:.1f} s on all the data against {default_s:.1f} s for Daft's default (no scaling step, "
            f"{own}; its sample run's extrapolation, under the simulator's {default.makespan_s:.1f} s)"
        )
    # The margin is for the simulator's error, so it is held against what the plans change: the time after the
    # actor pool's start, which both pay alike (the same pool, the same fitted start). Held against whole
    # makespans, a short job's start diluted it: on the bench's W5 (start 3.3 s) the plan was predicted 1.33×
    # faster after it but 1.17× in all, so Daft's default was kept in every run (its query 10-21 s, where the
    # expert's plan of the same shape beat it by 30 %); on W2 the default so kept took 31-42 s against 12-18 s.
    start_s = min(default.stages.get("startup", 0.0), formula.stages.get("startup", 0.0), default_makespan)
    default_after = max(default_makespan - start_s, 1e-9)
    formula_after = max(formula.makespan_s - start_s, 1e-9)
    after = f"after the actors' {start_s:.1f} s start, which both pay" if start_s > 0 else "in all"
    if formula_after * (1 + SIMULATED_DECISION_MARGIN) < default_after:
        ratio = default_after / formula_after
        return SimulatedChoice(
            default_s, formula_s, False, False, True, True, f"{head} takes {versus} ({ratio:.2f}× {after})"
        )
    if formula.makespan_s >= default_makespan:
        return SimulatedChoice(
            default_s, formula_s, False, False, False, True, f"{head} takes {versus}: no faster, Daft's default is kept"
        )
    return SimulatedChoice(
        default_s, formula_s, False, False, False, False,
        f"{head} takes {versus}: not {SIMULATED_DECISION_MARGIN:.0%} faster {after}, by simulation alone",
    )  # fmt: skip


__all__ = [
    "COST_PROBE_ACTORS",
    "COST_PROBE_CHUNK",
    "COST_PROBE_CHUNKS_PER_ACTOR",
    "COST_PROBE_MIN_CHUNKS_PER_ACTOR",
    "COST_PROBE_SHARE_OF_ACTOR_ROWS",
    "SCRIPT_BATCH_KEY",
    "SIMULATED_DECISION_MARGIN",
    "SIMULATOR_AGREEMENT",
    "SimulatedChoice",
    "batch_words",
    "cost_probe_plan",
    "cost_probe_rows",
    "daft_default_as_plan",
    "declared_batch",
    "planner_options",
    "simulated_choice",
]
