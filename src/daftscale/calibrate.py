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
  ``SIMULATED_DECISION_MARGIN`` faster after the actor pool's start (which both pay), else Daft's default is
  kept.
- **A join or shuffle before it**: the pieces Daft hands the UDF depend on that operator, so Daft's
  default itself runs on the sample first (its fragments come in many sizes, which also separates the
  costs). A clear simulated verdict decides; a close one measures the formula plan (and, if it is handed
  fragments, the plan that merges them) within the budget, and each run predicts its wall time on all
  the data (:func:`daftscale.tune.extrapolated_wall_s`): the plan must be ``DECISION_MARGIN`` faster.
- A sample run whose UDF **runs out of memory** (Daft's default's whole morsels, or the probe's B) is
  followed by one run at a small batch, which measures the peak memory per row in the actors
  (:func:`daftscale.udf.reset_peak_rss`); B is then bounded by the actor's memory
  (:mod:`daftscale.calibrate_memory`).

"No scaling step" keeps the pipeline's own UDF settings: its declared batch size, or Daft's own
(:attr:`daftscale.plan.ScalingPlan.udf_batch_size` is None), so it really is Daft's default.

A groupby after the UDF runs in every sample too: with no groupby before the scaling step, each sample's is
shuffled into as many partitions as its actors, not Daft's one per input file
(:func:`daftscale.calibrate_record.with_small_downstream_aggregations`).

Cost: each run costs about a sample's wall time, which includes all the work before the scaling step that
the sample does not cut (a limit or sample after a join still runs the join in full). ``auto`` skips
calibration for a job too small to sample (the sample would be a large share of it), which then keeps Daft's
default (nothing measured a plan faster) unless its input has fewer than ``MIN_DEFAULT_TASKS_PER_ACTOR`` files
per actor (Daft's default would leave actors idle, whatever the model costs: the formula plan spreads the
rows), and skips a further run when it would take calibration past ``BUDGET_SHARE`` of the predicted job
(at most ``MAX_BUDGET_S``); ``SECONDS`` sets the budget and calibrates whatever the size.
Declared UDF costs (a UDF profile) or a given plan skip it.

Some inputs need no sample run whatever the model costs, because their layout alone decides (light rows, nothing
shuffled before or after the step, no strategy asked): files the footers show balanced over the actors keep
Daft's default (:func:`balanced_default_reason`); uneven files are split evenly (:mod:`daftscale.calibrate_split`);
an in-memory table or a plain read of fewer tasks than ``MIN_DEFAULT_TASKS_PER_ACTOR`` per actor is spread over
every actor (:func:`few_tasks_spread`).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from daftscale.calibrate_memory import after_halved_calls, after_out_of_memory
from daftscale.calibrate_predict import (
    COST_PROBE_ACTORS,
    SCRIPT_BATCH_KEY,
    SIMULATED_DECISION_MARGIN,
    SimulatedChoice,
    batch_words,
    cost_probe_plan,
    cost_probe_rows,
    daft_default_as_plan,
    declared_batch,
    planner_options,
    simulated_choice,
)
from daftscale.calibrate_record import (
    Calibration,
    SampleRun,
    finish,
    formula_from,
    no_scaling_step,
    nothing_measured,
    record_rows_at_udf,
    record_rows_run,
    sampled,
    separates,
    summarise,
    udf_rows_of,
    unmeasured_default,
    with_small_downstream_aggregations,
)
from daftscale.calibrate_split import EvenSplit, default_imbalance, even_split, even_split_plan, own_batch_split
from daftscale.cluster import ClusterSpec
from daftscale.errors import ConfigError, RunError
from daftscale.plan import FRAGMENTED_SHARE, ScalingPlan, describe_step
from daftscale.plan_handle import SampledPlan
from daftscale.profile import DataProfile, in_memory_partitions, is_plain_read
from daftscale.report import RunReport, fit_udf_cost
from daftscale.scaling_plan import operators_above_first_udf, plan_operators

# Share of the rows at the scaling step the calibration sample takes, and its floor in full batches per
# actor (two each, so every actor runs, and a batch's cost is seen more than once).
SAMPLE_FRACTION = 0.05
MIN_SAMPLE_BATCHES_PER_ACTOR = 2

# "auto" calibrates only when the sample is at most this share of the rows: a job not ten times its sample
# is predicted tiny, and measuring it would cost a large part of running it.
MAX_AUTO_SAMPLE_SHARE = 0.1

# Daft's default runs one task per input file, and each task's rows go to the actors on the task's own node.
# With fewer tasks than this per actor, actors idle whenever tasks share a node. Measured on the bench's W7
# (2 files, 2 actors on two nodes, Daft's default): both files went to one actor in one run (31.6 s, 1 actor
# used) and one to each in another (17.5 s).
MIN_DEFAULT_TASKS_PER_ACTOR = 2

# Tasks per actor when an input of too few tasks is spread without a sample run (few_tasks_spread): the last task's
# tail is then about a quarter of an actor's share. Measured on a 20,000-row table, 4 actors on a 2 × 2 local
# cluster, a 5 ms + 0.2 ms per row stand-in: plain Daft 5.8-6.0 s (one task), into_batches(1,250) 3.0-3.1 s.
SPREAD_TASKS_PER_ACTOR = 4

# Daft's default needs no measuring when the footers show it balanced whatever the model costs: light rows, at
# least MIN_DEFAULT_TASKS_PER_ACTOR files per actor, and the files, handed out in order to whichever actor is free
# first, keep the busiest actor's rows within BALANCED_MAX_IMBALANCE of an even share (default_imbalance). Each
# actor then gets whole files in Daft's largest batches (its morsels), so a plan could only make more calls, and a
# sample run would cost its fixed start for nothing: about 2.1-2.6 s for 960 rows on a 2 × 2 local cluster
# (a query's start, then a 2-actor pool's). Measured there (16 files of 1,500 rows, a 60 ms + 0.1 ms per row
# stand-in, 4 actors): plain Daft 3.3-4.9 s; daftscale kept Daft's default after a 3.0 s cost probe, 6.1-6.8 s in all.
BALANCED_MAX_IMBALANCE = 1.1

# The same for files of one morsel each (a CSV or JSON file, a Parquet file of one row group): Daft's default
# then calls the UDF once per file, the fewest and largest calls there are, so a plan can win only by evening
# the rows out, by at most the busiest actor's imbalance. The cost probe chooses a plan only when the simulator
# predicts it SIMULATED_DECISION_MARGIN faster, which such an input cannot give: a probe there is paid for
# nothing. Measured on 24 power-law CSV files (imbalance 1.105, a 10 ms + 0.4 ms per row stand-in, 2 × 2 local
# cluster): daftscale kept Daft's default after a 3.2 s probe, 1.47-2.04× plain Daft's time.
BALANCED_ONE_MORSEL_MAX_IMBALANCE = 1 + SIMULATED_DECISION_MARGIN

# The default budget for the runs after the first: this share of the job's predicted time (from the first
# run), at most the ceiling. No floor: each further sample run costs about the query's fixed start (seconds
# on a small cluster), which a short job's plan cannot win back. Measured on a join over 300 small files
# (2 × 2 local cluster, a 10.5-12.2 s job with no scaling step): a 20 s floor let calibration measure two or
# three candidates, 7.4-12.2 s, to choose a plan predicted 6.4 s against Daft's default's 6.7 s.
BUDGET_SHARE = 0.15
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

# Most runs of formula plans one calibration makes (after Daft's default): a probe at another batch size or
# the plan from the costs, then the plan that merges fragments.
MAX_FORMULA_RUNS = 3

CALIBRATE_HELP = (
    "auto (default: measure on a sample unless the job is too small to sample), off, or a budget in SECONDS"
)


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


def _daft_default_may_leave_actors_idle(data: DataProfile, formula: ScalingPlan) -> bool:
    """Whether Daft's default has too few tasks to keep every actor busy: fewer files than actors, or fewer than
    ``MIN_DEFAULT_TASKS_PER_ACTOR`` per actor, since each task's rows go to the actors on its own node."""
    return max(1, data.files) < MIN_DEFAULT_TASKS_PER_ACTOR * formula.concurrency


def _footer_file_rows(data: DataProfile, formula: ScalingPlan) -> tuple[int, ...] | None:
    """The input files' rows when the footers alone may say how Daft's default spreads them: light rows (heavy
    ones: a whole morsel may not fit an actor), files whose rows add up to the input, and at least
    ``MIN_DEFAULT_TASKS_PER_ACTOR`` of them per actor; else None."""
    sizes, actors = data.file_rows, formula.concurrency
    if formula.strategy != "shuffle" or not sizes or sum(sizes) != data.rows or actors < 1:
        return None
    if len(sizes) < MIN_DEFAULT_TASKS_PER_ACTOR * actors:
        return None
    return sizes


def balanced_default_reason(data: DataProfile, formula: ScalingPlan) -> str | None:
    """Why Daft's default needs no sample run (its input, read from the footers, is balanced over the actors
    whatever the model costs: ``BALANCED_MAX_IMBALANCE``, or ``BALANCED_ONE_MORSEL_MAX_IMBALANCE`` for files
    Daft hands the UDF whole), or None.

    >>> from dataclasses import dataclass, replace
    >>> from daftscale import ClusterSpec, plan, profile_numbers
    >>> even = replace(profile_numbers(24_000, 60), files=16, file_rows=(1_500,) * 16)
    >>> formula = plan(even, ClusterSpec(nodes=2, cpus_per_node=2), concurrency=4)
    >>> balanced_default_reason(even, formula)[:60]
    "Daft's default is balanced: 16 input files of 1,500 rows, 4 "
    >>> one_large = replace(even, rows=25_500, file_rows=(1_500,) * 15 + (3_000,), row_groups=32)
    >>> balanced_default_reason(one_large, plan(one_large, ClusterSpec(nodes=2, cpus_per_node=2), concurrency=4))
    >>> one_morsel_each = replace(one_large, row_groups=16)  # each file one call: a plan could win 1.18× at most
    >>> "the busiest actor 1.18×" in balanced_default_reason(one_morsel_each, formula)
    True
    >>> balanced_default_reason(replace(even, file_rows=(1_500,) * 15 + (600,)), formula) is None  # rows differ
    True
    """
    sizes, actors = _footer_file_rows(data, formula), formula.concurrency
    if sizes is None:
        return None
    files = len(sizes)
    imbalance = default_imbalance(sizes, actors)
    one_morsel_each = data.row_groups <= files
    if imbalance > (BALANCED_ONE_MORSEL_MAX_IMBALANCE if one_morsel_each else BALANCED_MAX_IMBALANCE):
        return None
    span = f"{min(sizes):,}" if min(sizes) == max(sizes) else f"{min(sizes):,}-{max(sizes):,}"
    return (
        f"Daft's default is balanced: {files:,} input files of {span} rows, "
        f"{files / actors:.3g} per actor, each handed to the model whole, the busiest actor "
        f"{imbalance:.2f}× an even share, so no plan could win back a sample run's start "
        "(run with --calibrate SECONDS to measure anyway)"
    )


def _layout_asked(kwargs: dict[str, Any]) -> bool:
    """Whether the pipeline names a strategy or keys: then its own scaling step is made, not a plan in its place."""
    return kwargs.get("strategy", "auto") != "auto" or bool(kwargs.get("keys"))


def _uneven_split(data: DataProfile, formula: ScalingPlan, kwargs: dict[str, Any]) -> EvenSplit | None:
    """The into_batches split that evens out uneven input files whatever the model costs (files the footers
    lay out, no strategy or keys asked for), or None: then a sample run decides. Its caller has already
    ruled out declared costs (a UDF profile)."""
    sizes = _footer_file_rows(data, formula)
    if sizes is None or _layout_asked(kwargs):
        return None
    if data.row_groups > data.files:
        # Files of several row groups: Daft's default may call the UDF per row group, in calls smaller and more
        # numerous than the files, so the split's "no more calls, none larger" does not follow from the files.
        return None
    return even_split(sizes, formula.concurrency)


def _split_without_sample(
    data: DataProfile,
    formula: ScalingPlan,
    kwargs: dict[str, Any],
    split: EvenSplit,
    runner: str,
    started: float,
) -> ScalingPlan:
    """The split plan, with the calibration record saying why nothing was sampled."""
    reason = (
        f"the footers show uneven files that into_batches({split.rows_per_task:,}) evens out with no more calls "
        "than Daft's default and none larger, no slower whatever the model costs, so no sample run is paid for "
        "(run with --calibrate SECONDS to measure anyway)"
    )
    chosen = even_split_plan(formula, data, split, declared_batch(kwargs))
    return replace(chosen, calibration=_skipped_note(data.rows, runner, reason, started).to_dict())


@dataclass(frozen=True)
class Spread:
    """An input that Daft's default runs as fewer tasks than ``MIN_DEFAULT_TASKS_PER_ACTOR`` per actor, and the
    ``into_batches`` that spreads its rows over every actor (:func:`few_tasks_spread`)."""

    source: str  # what the input is, e.g. "an in-memory table of 1 partition" or "1 input file"
    runs_as: str  # how Daft's default runs it, e.g. "1 task (one per partition)"
    rows_per_task: int


def few_tasks_spread(
    data: DataProfile, formula: ScalingPlan, kwargs: dict[str, Any], scaling_input: Any
) -> Spread | None:
    """The spread of an input Daft's default runs as too few tasks to keep every actor busy, whatever the model
    costs, or None. Two inputs are known to run so: an in-memory table (``daft.from_pydict`` and the like, with
    projections only: one task per partition) and a plain read of files the footers or sizes lay out (about one
    task per file; Daft splits only a file larger than its scan task's maximum size, hundreds of MB). With light
    rows and nothing asked of the strategy, ``into_batches(R / (SPREAD_TASKS_PER_ACTOR × C))`` makes that many
    tasks per actor, each handed to the UDF whole (Daft's own batch) or in the pipeline's declared batches.

    Measured on a 2 × 2 local cluster, 4 actors: a 20,000-row in-memory table (a 5 ms + 0.2 ms per row
    stand-in) 5.8-6.0 s under Daft's default against 3.0-3.1 s spread; one Parquet file of 40,000 rows in 16
    row groups (20 ms + 0.1 ms per row) 5.2-5.4 s under Daft's default, which ran it on the 2 actors of one
    node, against 4.1-4.2 s spread over all 4.
    """
    if scaling_input is None or formula.strategy != "shuffle" or _layout_asked(kwargs):
        return None
    actors = formula.concurrency
    partitions = in_memory_partitions(scaling_input)
    if partitions is not None:
        tasks, source = partitions, f"an in-memory table of {_count(partitions, 'partition')}"
        runs_as = f"{_count(partitions, 'task')} (one per partition)"
    elif data.file_rows and sum(data.file_rows) == data.rows and is_plain_read(scaling_input):
        tasks, source = len(data.file_rows), _count(len(data.file_rows), "input file")
        runs_as = f"{_count(tasks, 'task')} (one per file)"
    else:
        return None
    if tasks >= MIN_DEFAULT_TASKS_PER_ACTOR * actors:
        return None
    return Spread(source, runs_as, max(1, math.ceil(data.rows / (SPREAD_TASKS_PER_ACTOR * actors))))


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'s' if number != 1 else ''}"


def _spread_without_sample(
    data: DataProfile,
    formula: ScalingPlan,
    kwargs: dict[str, Any],
    spread: Spread,
    runner: str,
    started: float,
) -> ScalingPlan:
    """The input spread over every actor by ``into_batches``, with no sample run (:func:`few_tasks_spread`)."""
    rows_per_task = spread.rows_per_task
    actors, declared = formula.concurrency, declared_batch(kwargs)
    tasks = math.ceil(data.rows / rows_per_task)
    reason = (
        f"the input is {spread.source}, which Daft's default runs as {spread.runs_as} for {actors} actors, leaving "
        "actors idle whatever the model costs: no sample run is paid for (run with --calibrate SECONDS to measure "
        "anyway)"
    )
    calls = f"{declared}-row batches as the pipeline sets" if declared else "Daft's own batch (each task whole)"
    why = (
        f"nothing was measured, but Daft's default would run {spread.source} as {spread.runs_as} and leave actors "
        f"idle; into_batches({rows_per_task:,}) makes about {tasks:,} tasks for {actors} actors with the UDF on "
        f"{calls}, so the rows are spread over every actor"
    )
    step = (
        f"The input is {spread.source}: apply df.into_batches({rows_per_task:,}), {SPREAD_TASKS_PER_ACTOR} tasks "
        "per actor, each handed to the UDF whole."
    )
    chosen = own_batch_split(
        formula,
        rows_per_task,
        declared,
        reason=f"{spread.source} for {actors} actors",
        steps=(*formula.steps, step),
        partitions="left as the input has them",
        into_batches=f"df.into_batches({rows_per_task:,}) spreads the input's rows over every actor",
        why=why,
        basis=f"{spread.source}, fewer tasks than {MIN_DEFAULT_TASKS_PER_ACTOR} per actor (nothing measured)",
    )
    return replace(chosen, calibration=_skipped_note(data.rows, runner, reason, started).to_dict())


def _skipped_note(rows: int, runner: str, reason: str, started: float | None = None) -> Calibration:
    """The calibration record of a plan made with no sample run, for ``reason`` (and the time it took to decide)."""
    note = Calibration(sample_rows=0, rows=rows, runner=runner, skipped=reason, lines=[f"skipped: {reason}"])
    if started is not None:
        note.elapsed_s = round(time.monotonic() - started, 3)
    return note


def _spread_decision(data: DataProfile, formula: ScalingPlan, reason: str) -> dict[str, Any]:
    """The decision for a job too small to sample whose files leave actors idle under Daft's default."""
    # One task per input file (an in-memory table is one): with fewer files than actors the rest idle for sure.
    tasks, actors = max(1, data.files), formula.concurrency
    idle = max(0, actors - tasks)
    runs_as = f"nothing was measured (calibration: {reason.split(' (')[0]}), but Daft's default would run the input as "
    if idle:
        why = (
            f"{runs_as}{tasks} task{'s' if tasks != 1 else ''} (one per file) and leave {idle} of the {actors} "
            "actors idle, so the formula plan spreads the rows over all of them"
        )
        return {"scaling_step": True, "why": why, "basis": "input files fewer than actors (nothing measured)"}
    why = (
        f"{runs_as}{tasks} tasks (one per file) for {actors} actors, and each task's rows go to the actors on its "
        f"own node: with under {MIN_DEFAULT_TASKS_PER_ACTOR} tasks per actor, actors idle whenever tasks share a "
        "node, so the formula plan spreads the rows over all of them"
    )
    basis = f"input files fewer than {MIN_DEFAULT_TASKS_PER_ACTOR} per actor (nothing measured)"
    return {"scaling_step": True, "why": why, "basis": basis}


def _groups_before_step(scaling_input: Any, upstream_shuffle: bool) -> bool:
    """Whether a groupby may come before the scaling step (then Daft's setting shapes what reaches the UDF)."""
    if scaling_input is None:
        return upstream_shuffle
    try:
        return "Aggregate" in plan_operators(scaling_input)
    except Exception:  # the plan text cannot be read: assume it may
        return True


def shuffles_after_step(scaling_input: Any, output: Any) -> bool:
    """Whether an operator of ``SHUFFLING_OPS`` follows the scaling step and may come before the UDF, so that the
    UDF is handed the shuffle's pieces rather than the files the footers show. A shuffle that only follows the
    UDF (a groupby or sort of its results, a join with metadata) leaves the UDF the step's pieces: Daft runs the
    UDF in the tasks that read, before the shuffle's map side. True when the plan text cannot be read (or names
    no UDF call), False when either DataFrame is unknown.

    >>> import daft
    >>> @daft.func
    ... def plus_one(x: int) -> int:
    ...     return x + 1
    >>> step = daft.from_pydict({"id": [1, 2], "x": [3, 4]})
    >>> shuffles_after_step(step, step.with_column("y", step["x"] + 1))
    False
    >>> shuffles_after_step(step, step.join(daft.from_pydict({"id": [1], "z": [5]}), on="id"))
    True
    >>> scored = step.with_column("y", plus_one(step["x"]))
    >>> shuffles_after_step(step, scored.groupby("id").agg(daft.col("y").sum()))
    False
    >>> shuffles_after_step(step, step.sort("x").with_column("y", plus_one(step["x"])))
    True
    """
    if scaling_input is None or output is None:
        return False
    try:
        added = Counter(plan_operators(output)) - Counter(plan_operators(scaling_input))
        shuffles = sum(count for op, count in added.items() if op in SHUFFLING_OPS)
        if not shuffles:
            return False
        above = operators_above_first_udf(output)
    except Exception:  # a Daft without this private API: the footers cannot be trusted to be what the UDF gets
        return True
    return above is None or sum(op in SHUFFLING_OPS for op in above) < shuffles


# Operators by which a pipeline lays its rows out itself.
LAYOUT_OPS = frozenset({"Repartition", "IntoPartitions", "IntoBatches"})


def own_layout_before_udf(scaling_input: Any, output: Any) -> str | None:
    """The operator (of ``LAYOUT_OPS``) by which the pipeline lays its rows out itself after the scaling step and
    before its UDF, or None. Whatever a plan did at the step, that operator lays the rows out again before the
    model sees them, so only the batch size could differ from the pipeline's own choice.

    >>> import daft
    >>> @daft.func
    ... def plus_one(x: int) -> int:
    ...     return x + 1
    >>> step = daft.from_pydict({"x": [1, 2]})
    >>> own_layout_before_udf(step, step.into_batches(500).with_column("y", plus_one(step["x"])))
    'IntoBatches'
    >>> own_layout_before_udf(step, step.with_column("y", plus_one(step["x"])).into_batches(500)) is None
    True
    """
    if scaling_input is None or output is None:
        return None
    try:
        added = Counter(plan_operators(output)) - Counter(plan_operators(scaling_input))
        above_udf = operators_above_first_udf(output)
    except Exception:  # the plan text cannot be read: nothing is known of the pipeline's layout
        return None
    if above_udf is None:
        return None
    above = Counter(above_udf)
    return next((op for op in sorted(LAYOUT_OPS) if added[op] > above[op]), None)


def upstream_shuffles(df: Any) -> bool:
    """True when an operator of ``SHUFFLING_OPS`` comes before the scaling step (``df`` is the DataFrame there)."""
    try:
        operators = plan_operators(df)
    except Exception:  # a Daft without this private API: sample by the head, as the tuner does
        return False
    return bool(set(operators) & SHUFFLING_OPS)


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
    output: Any = None,
    say: Callable[[str], None] = lambda _text: None,
    udfs_timed: bool = True,
    script_batch_size: int | None = None,
) -> ScalingPlan:
    """The plan to run: the formula plan made from measurements, or Daft's default, whichever is predicted faster.

    ``upstream_shuffle``: whether a join or shuffle comes before the scaling step (None: read from
    ``scaling_input`` by :func:`upstream_shuffles`); it chooses between the cost probe and Daft's default
    as the first sample run. ``output`` (the pipeline's DataFrame at its end): a join or shuffle after the
    step (:func:`shuffles_after_step`) means the UDF may not get the files as read, so the footers alone
    decide nothing (a balanced input, an uneven one's split) and a sample run measures.

    ``run_sample(plan)`` runs the pipeline with a sampled plan (:func:`sampled`) on the runtime at hand
    and returns its report; ``scaling_input`` (the DataFrame at the scaling step) chooses how to sample
    (:func:`upstream_shuffles`). With calibration skipped, the formula plan as ``daftscale plan`` makes it
    (its JSON unchanged when ``calibrate`` is ``"off"``). ``udfs_timed`` False (a script whose UDFs are a
    stateless ``@daft.func`` or a legacy ``@daft.udf``, which report no calls) skips the sample runs: they
    would measure nothing, and Daft's default is kept unless it leaves actors idle whatever the model costs.
    ``script_batch_size``: a plain script's own batch (its ``@daft.method.batch(batch_size=...)``), which Daft's
    default runs with and is measured and predicted with; the formula plan's B is still the planner's.
    """
    from daftscale.plan import plan as make_plan

    if script_batch_size and not kwargs.get("batch_size"):
        kwargs = {**kwargs, SCRIPT_BATCH_KEY: script_batch_size}

    started = time.monotonic()
    formula = make_plan(data, cluster, **planner_options(kwargs))
    rows = data.rows
    sample = sample_rows_for(rows, formula.concurrency, formula.batch_size)
    reason = skip_reason(calibrate, kwargs, rows, sample)
    auto = calibrate == "auto" and kwargs.get("udf_profile") is None
    if upstream_shuffle is None and (reason is None or auto):
        upstream_shuffle = scaling_input is not None and upstream_shuffles(scaling_input)
    own_layout = own_layout_before_udf(scaling_input, output) if auto and not _layout_asked(kwargs) else None
    if own_layout is not None:
        # The author's own layout stands: a sample run (a query's start, seconds) could only tune the batch. Measured
        # on a script with repartition(8) and a batch of 64 (2 × 2 local cluster, 30,209 rows): a 3.0-3.35 s sample
        # run of Daft's default, then Daft's default kept, 0.99-1.26× plain Daft in all.
        reason = (
            f"the pipeline lays its rows out itself with {own_layout} between the scaling step and its UDF, so any "
            "plan would be laid out again before the model: its own layout and batch are kept, and no sample run is "
            "paid for (run with --calibrate SECONDS to measure anyway)"
        )
        return replace(
            unmeasured_default(formula, declared_batch(kwargs), reason),
            calibration=_skipped_note(rows, runner, reason, started).to_dict(),
        )
    # A join or shuffle before the step, or after it, may hand the UDF pieces of its own, not the files the
    # footers show.
    if auto and not upstream_shuffle and not shuffles_after_step(scaling_input, output):
        # Uneven files are evened out, and too few tasks spread, whatever the model costs, a tiny job's too: nothing
        # to sample for. (A job is tiny by its rows at the step, which an explode after it may multiply: the bench's
        # W6, 1,200 documents exploded to 18,392 chunks, ran the formula plan's 64-row calls where a spread task's
        # chunks go to the UDF whole.)
        split = _uneven_split(data, formula, kwargs)
        if split is not None:
            return _split_without_sample(data, formula, kwargs, split, runner, started)
        spread = few_tasks_spread(data, formula, kwargs, scaling_input)
        if spread is not None:
            return _spread_without_sample(data, formula, kwargs, spread, runner, started)
        if reason is None:
            reason = balanced_default_reason(data, formula)
    if reason is None and not udfs_timed:
        reason = (
            "no UDF of this job reports its calls (daftscale times @daft.cls batch methods, not row-wise or async "
            "methods, a stateless @daft.func or a legacy @daft.udf), so a sample run would measure nothing"
        )
    if reason is not None:
        if calibrate == "off":
            return formula
        note = _skipped_note(rows, runner, reason)
        if kwargs.get("udf_profile") is not None or kwargs.get("strategy", "auto") != "auto":
            # Declared costs are a measurement (the user's), and a strategy named by the user asks for its
            # scaling step: the formula plan stands on them.
            return replace(formula, calibration=note.to_dict())
        if _daft_default_may_leave_actors_idle(data, formula):
            return replace(formula, calibration=note.to_dict(), decision=_spread_decision(data, formula, reason))
        return replace(unmeasured_default(formula, declared_batch(kwargs), reason), calibration=note.to_dict())
    if not _groups_before_step(scaling_input, upstream_shuffle):
        run_sample = with_small_downstream_aggregations(run_sample)
    by_fraction = upstream_shuffle
    if not by_fraction:
        # One cost probe on a small pool: it needs calls of both sizes on each of its actors, not a share of the data.
        sample = cost_probe_rows(sample, formula)
    budget = float(calibrate) if not isinstance(calibrate, str) else None
    how = f"df.limit({sample})" + (f", df.sample({sample / rows:.3g}) for the formula plan" if by_fraction else "")
    cal = Calibration(
        sample_rows=sample,
        rows=rows,
        runner=runner,
        budget_s=budget,
        sampling=how,
        declared_batch_size=declared_batch(kwargs),
    )
    first_run = "Daft's default, then the formula plan if close" if by_fraction else "one cost probe on 2 actors"
    say(f"calibrating on {sample:,} of {rows:,} rows ({how}): {first_run}…")

    own_batch = declared_batch(kwargs)
    default = no_scaling_step(formula, "calibration baseline", udf_batch_size=own_batch)
    if not by_fraction:
        # Nothing before the scaling step cuts the rows into pieces of its own: Daft's default is the input's
        # files and row groups, which the simulator lays out from the data profile. One cost probe measures
        # what it needs; Daft's default need not run.
        return _calibrate_by_cost_probe(data, cluster, kwargs, formula, cal, run_sample, started)

    # 1. Daft's default: no scaling step, the pipeline's own batch size, on a small pool. What it measures (the
    # pieces Daft hands the UDF, the cost per call and per row) does not depend on the pool's size, and its
    # start is most of a short sample's run. Measured here: a 64-row query took 0.9-1.8 s on 2 actors and
    # 3.6-5.8 s on 8 (4 × 4 local cluster); over a join of 300 small files (2 × 2), Daft's default's sample run
    # took 3.0-3.2 s on the pipeline's 4 actors and 2.2-2.4 s on 2. Its wall time is extrapolated to the
    # pipeline's whole pool (summarise).
    t0 = time.monotonic()
    small_pool = replace(default, concurrency=min(default.concurrency, COST_PROBE_ACTORS))
    # By the head always: a fraction sample would shrink every partition, and with no scaling step the UDF
    # gets the partitions as they are (measured: 3.4 rows per call on a 5 % sample, 47 on all the data).
    try:
        default_report = run_sample(sampled(small_pool, rows, sample, by_fraction=False))
    except RunError as exc:
        if not exc.out_of_memory:
            raise
        # Daft's default does not fit the UDF's memory: it is no candidate, and the run must find a batch that fits.
        return after_out_of_memory(
            data, cluster, kwargs, formula, cal, exc, time.monotonic() - t0, sampled_run=run_sample, started=started
        )
    run_s = time.monotonic() - t0
    udf_rows = udf_rows_of(default_report)
    if udf_rows == 0:
        return nothing_measured(cal, formula, started)
    # The run's own rows at the step: files spread over a read (daftscale.execution.spread_files) are about the sample.
    run_rows = record_rows_run(cal, default_report.rows_in or sample)
    growth, rows_at_udf = record_rows_at_udf(cal, udf_rows, run_rows)
    first = summarise("Daft's default", default, default_report, run_s, run_rows, rows_at_udf)
    cal.runs.append(first)
    if budget is None:
        budget = min(MAX_BUDGET_S, BUDGET_SHARE * (first.predicted_full_s or 0.0))
        cal.budget_s = round(budget, 1)
    calls = list(default_report.udf_calls)

    # 2. The formula plan from what the default run measured; 3. merged fragments if it was handed them.
    fit = fit_udf_cost(calls)
    # A sample cannot fill calls bigger than its own rows per actor: fragments are calls short of what it could.
    sample_at_udf = run_rows * growth
    full = _full_call_rows(formula.batch_size, sample_at_udf, formula.concurrency)
    fragments = first.mean_rows_per_call if first.mean_rows_per_call < FRAGMENTED_SHARE * full else None
    # Calls of one size (or nearly) do not separate per-call from per-row cost: the formula plan is then
    # measured at PROBE_BATCH_MULTIPLE × B first (the tuner's widest multiple), and planned again from both runs.
    probing = not separates(fit)
    options = {**kwargs, "batch_size": PROBE_BATCH_MULTIPLE * formula.batch_size} if probing else kwargs
    candidate = formula_from(data, cluster, options, None if probing else fit, calls, growth, fragments)
    name = f"formula plan, batch ×{PROBE_BATCH_MULTIPLE}" if probing else "formula plan"

    # The simulator, fitted to Daft's default run, predicts both candidates on all the data. A clear verdict
    # decides without another sample run (each costs about the query's fixed start, seconds: on a short job
    # as much as the plan could win); a close one is measured when the budget allows.
    if not probing:
        verdict = simulated_choice(data, cluster, candidate, default_report, own_batch, first.predicted_full_s)
        if verdict is not None:
            cal.simulated = verdict.to_dict()
            if verdict.clear:
                return finish(cal, calls, formula, candidate, verdict, verdict.why, started)

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
        run = summarise(name, candidate, report, time.monotonic() - t0, sample, rows_at_udf)
        cal.runs.append(run)
        measured.append((candidate, run))
        calls += report.udf_calls
        fit = fit_udf_cost(calls)
        last, candidate = measured[-1][0], None
        full = _full_call_rows(last.batch_size, sample_at_udf, last.concurrency)
        handed_fragments = run.calls and run.mean_rows_per_call < FRAGMENTED_SHARE * full
        if probing:
            probing = False
            if separates(fit):
                planned = formula_from(data, cluster, kwargs, fit, calls, growth, fragments)
                if describe_step(planned) != describe_step(last) or planned.batch_size != last.batch_size:
                    candidate, name = planned, "formula plan (measured costs)"
        elif handed_fragments and not last.coalesce and len(measured) < MAX_FORMULA_RUNS:
            merged = formula_from(data, cluster, kwargs, fit, calls, growth, run.mean_rows_per_call)
            candidate, name = (merged, "formula plan, fragments merged") if merged.coalesce else (None, name)

    timed = [(p, r) for p, r in measured if r.predicted_full_s]
    best = min(timed, key=lambda pr: pr[1].predicted_full_s or math.inf) if timed else None
    if (
        best is not None
        and first.predicted_full_s
        and ((best[1].predicted_full_s or math.inf) * (1 + DECISION_MARGIN) < first.predicted_full_s)
    ):
        return finish(cal, calls, formula, best[0], best, "", started)
    own = batch_words(own_batch)
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
    return finish(cal, calls, formula, measured[-1][0] if measured else formula, None, why, started)


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
    own_batch = declared_batch(kwargs)
    probe = cost_probe_plan(formula, formula.batch_size)
    name = f"cost probe (calls of {probe.batch_size} rows and the rest of {probe.into_batches}-row chunks)"
    t0 = time.monotonic()
    try:
        report = run_sample(sampled(probe, rows, sample, by_fraction=False, halve_out_of_memory=True))
    except RunError as exc:
        # A call ran out of memory on a single row, or the UDF does not raise a memory error Python can name.
        if not exc.out_of_memory:
            raise
        return after_out_of_memory(
            data, cluster, kwargs, formula, cal, exc, time.monotonic() - t0, sampled_run=run_sample, started=started,
            failed_name=f"the cost probe (batch {probe.batch_size})", failed_plan=probe,
        )  # fmt: skip
    udf_rows = udf_rows_of(report)
    if udf_rows == 0:
        return nothing_measured(cal, formula, started)
    run_rows = record_rows_run(cal, report.rows_in or sample)  # the files may hold other rows than asked for
    growth, rows_at_udf = record_rows_at_udf(cal, udf_rows, run_rows)
    run = summarise(name, probe, report, time.monotonic() - t0, run_rows, rows_at_udf)
    cal.runs.append(run)
    calls = list(report.udf_calls)
    fit = fit_udf_cost(calls)
    candidate = formula_from(data, cluster, kwargs, fit if separates(fit) else None, calls, growth, None)
    if report.udf_calls_halved:
        args = (data, cluster, kwargs, formula, cal, report, run, candidate, growth, started)
        candidate, bounded = after_halved_calls(*args)
        if bounded is not None:
            return bounded
    verdict = (
        simulated_choice(data, cluster, candidate, report, own_batch, None, measured_fragments=False)
        if separates(fit)
        else None
    )
    if verdict is None:
        why = (
            "the cost probe did not separate the UDF's per-call from its per-row cost, so no plan is predicted "
            "faster: Daft's default is kept"
        )
        return finish(cal, calls, formula, candidate, None, why, started)
    cal.simulated = verdict.to_dict()
    if verdict.clear:
        return finish(cal, calls, formula, candidate, verdict, verdict.why, started)
    return finish(cal, calls, formula, candidate, None, f"{verdict.why}: Daft's default is kept", started)


__all__ = [
    "CALIBRATE_HELP",
    "Calibration",
    "SampleRun",
    "SimulatedChoice",
    "Spread",
    "balanced_default_reason",
    "calibrated_plan",
    "cost_probe_plan",
    "daft_default_as_plan",
    "few_tasks_spread",
    "no_scaling_step",
    "own_layout_before_udf",
    "parse_calibrate",
    "sample_rows_for",
    "sampled",
    "simulated_choice",
    "skip_reason",
    "upstream_shuffles",
]
