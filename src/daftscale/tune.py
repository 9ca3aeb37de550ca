"""Tune: a measured search around the formula plan, on a sample of the data, saved as a plan file.

Owns the candidate grid (partitions × batch size around the formula plan), the successive-halving
schedule, the sampled trial runs, the simulator's pruning, the per-input result cache and
:class:`TuneResult`. The grid and the schedule are pure functions; the rest runs the pipeline.

How a search goes (:func:`tune`):

1. probe and profile the pipeline's DataFrame at the scaling step and make the formula plan for the
   cluster at hand (as ``daftscale run`` does); a cached result for the same pipeline source, data
   profile, cluster shape and planner options is returned at once (with ``local_cluster`` it is looked
   up before the cluster starts, profiling in a native-runner subprocess);
2. candidates: the formula's partitions (streaming: ``into_batches`` rows per task) and batch size
   times ``×¼ ×½ ×1 ×2 ×4`` each, deduplicated, batch sizes above what an actor's memory holds dropped;
3. the formula plan runs first, on the smallest rung's sample; its run report calibrates the simulator
   (:func:`daftscale.simulate.costs_from_report`), which then predicts every candidate on the full data
   and prunes those it predicts out of memory or much slower than the best (kept at most
   ``max_candidates``);
4. successive halving: all survivors run on a small sample, the faster half on a sample ``eta`` times
   bigger, and so on up to the whole ``sample`` fraction; the formula plan runs in every rung as the
   baseline, and a candidate must beat it by ``MIN_IMPROVEMENT`` on the last rung, and again in an
   earlier rung or when both are run once more, to win (smaller gains, or one run's, are within
   run-to-run noise). "Faster" is
   the wall time each trial predicts for the full data (:func:`extrapolated_wall_s`: the sample's wall
   time plus the rows it did not run, at its actors' steady rate), not the sample's rows/s: a sample
   run is mostly the query's fixed start (seconds on a small cluster), which would hide the differences
   in the UDF stage that the candidates are about, and would penalise a big batch's tail, which weighs
   less on the full data;
5. measured costs: when the formula plan was made without a UDF profile (the pipeline declared a batch
   size, or none), the first rung's runs have called the UDF at several batch sizes; the per-call and
   per-row costs fitted over all those calls give the planner the profile it lacked, and the plan it then
   makes joins the search as the candidate ``measured costs`` (run on the first rung's sample as soon
   as two batch sizes have run there, then halved like the rest). This is how a search finds a batch
   size outside the grid's two octaves; ``measured_costs=False`` leaves it out;
6. the winner is the full-data plan with the winning numbers; its steps say it was tuned, from what,
   and by how much it beat the formula plan on the sample.

Sampling: a trial runs the pipeline with a plan whose ``apply(df)`` first takes ``df.limit(n)`` of the
DataFrame reaching the scaling step, then applies the candidate's scaling step. ``limit`` (not
``sample``) because it gives exactly ``n`` rows, so every candidate of a rung sees the same rows,
rows in == rows out is checked exactly, and reading stops early; the price is that the sample is the
head of the data, so sorted data gives a biased sample. Partitions are scaled with the sample
(``sample_partitions``) so each partition holds as many rows as in the full run.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from daftscale.cluster import ClusterSpec
from daftscale.config import require_positive_number
from daftscale.errors import ConfigError, DaftscaleError, RunError
from daftscale.pipeline import Pipeline, load_pipeline, probe
from daftscale.plan import ScalingPlan
from daftscale.profile import DataProfile
from daftscale.report import RunReport, atomic_write
from daftscale.simulate import costs_from_report, simulate

if TYPE_CHECKING:
    from daftscale.run import Session  # run imports calibrate, which imports this module

TUNE_FORMAT_VERSION = 4

# Multiples of the formula's numbers tried each way: two octaves either side covers the error of the
# formulas' assumptions (K = 4 batches per task, a guessed per-call cost) without a wide grid.
DEFAULT_MULTIPLES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

# Share of the data the last rung runs on: large enough for steady state, small enough to be quick.
DEFAULT_SAMPLE = 0.1

# Wall-clock budget for the whole search; past it no new trial starts and the best so far wins.
DEFAULT_BUDGET_S = 300.0

# Successive halving keeps 1/eta of each rung and grows the sample eta times: 2 halves, the most
# forgiving of noisy small-sample measurements.
DEFAULT_ETA = 2

# Most candidates measured in the first rung (ranked by the simulator's prediction): each real trial
# costs an actor-pool start-up, so the grid's 25 would take minutes even on small samples.
DEFAULT_MAX_CANDIDATES = 8

# The simulator prunes a candidate predicted this much slower than the best prediction: a margin wide
# enough for the model's error (it calibrates from one run) to keep the close calls for measurement.
PRUNE_SLOWER_THAN = 1.5

# A candidate must beat the formula plan's predicted full-data time by this much on the last rung to replace it:
# run-to-run noise of short runs on a shared machine is several percent.
MIN_IMPROVEMENT = 0.05

# Runs a win needs before it is trusted: the winner and the formula plan once more each (see _Search._confirm).
CONFIRMATION_RUNS = 2

# How long the native-runner subprocess that looks up the cache before a local cluster starts may take.
CACHE_PROBE_TIMEOUT_S = 120.0

# Fewest rows a trial runs on, per actor and batch, so the biggest batch still reaches every actor.
MIN_BATCHES_PER_ACTOR = 1


# ---------------------------------------------------------------------------------------------------
# Pure parts: the grid and the schedule


@dataclass(frozen=True)
class Candidate:
    """One point of the grid: the full-data numbers and the multiples of the formula's they came from.

    ``partitions`` is set for shuffle plans, ``into_batches`` for streaming ones (the task lever).
    """

    name: str
    batch_size: int
    partitions: int | None = None
    into_batches: int | None = None
    batch_multiple: float = 1.0
    task_multiple: float = 1.0

    @property
    def is_formula(self) -> bool:
        return self.batch_multiple == 1.0 and self.task_multiple == 1.0


def _fraction(m: float) -> str:
    """``×¼``-style labels for the multiples.

    >>> [_fraction(m) for m in (0.25, 0.5, 1.0, 2.0, 3.0)]
    ['¼', '½', '1', '2', '3']
    """
    return {0.25: "¼", 0.5: "½", 0.75: "¾"}.get(m, f"{m:g}")


def candidate_grid(
    batch_size: int,
    *,
    partitions: int | None = None,
    into_batches: int | None = None,
    rows: int,
    batch_multiples: Sequence[float] = DEFAULT_MULTIPLES,
    task_multiples: Sequence[float] = DEFAULT_MULTIPLES,
    max_batch_size: int | None = None,
) -> list[Candidate]:
    """Candidates around a formula plan: batch size × (partitions or ``into_batches``) times the multiples.

    Numbers are rounded and clamped to ``[1, rows]``, batch sizes above ``max_batch_size`` (what an
    actor's memory holds) become that bound, ``into_batches`` is kept at least the batch size (a smaller task
    would cut every UDF call short), and duplicates keep the multiples closest to 1 (candidates come nearest first). The
    formula plan (×1 ×1) is always first.

    >>> [(c.partitions, c.batch_size) for c in candidate_grid(64, partitions=40, rows=20_000,
    ...                                                        batch_multiples=(0.5, 1, 2), task_multiples=(1, 2))]
    [(40, 64), (40, 32), (80, 64), (40, 128), (80, 32), (80, 128)]
    >>> [c.batch_size for c in candidate_grid(64, partitions=4, rows=1000, max_batch_size=100, task_multiples=(1,))]
    [64, 32, 100, 16]
    """
    if (partitions is None) == (into_batches is None):
        raise ConfigError("candidate_grid needs partitions (shuffle) or into_batches (streaming), not both")
    rows = max(1, int(rows))
    cap = min(rows, max_batch_size) if max_batch_size else rows
    task = partitions if partitions is not None else into_batches
    assert task is not None
    formula = Candidate("formula", batch_size, partitions, into_batches)
    seen = {(formula.batch_size, formula.partitions, formula.into_batches)}
    out = [formula]
    options = sorted(
        ((bm, tm) for bm in dict.fromkeys(batch_multiples) for tm in dict.fromkeys(task_multiples)),
        key=lambda pair: (abs(math.log(pair[0])) + abs(math.log(pair[1])), pair[0], pair[1]),
    )
    for bm, tm in options:
        if bm <= 0 or tm <= 0:
            raise ConfigError(f"tuning multiples must be above 0, got {bm:g} and {tm:g}")
        # A batch above the memory bound becomes the bound: the biggest batch that fits stands in for it.
        b = min(max(1, round(batch_size * bm)), cap)
        t = max(1, min(rows, round(task * tm)))
        p, ib = (t, None) if partitions is not None else (None, max(b, t))
        key = (b, p, ib)
        if key in seen:
            continue
        seen.add(key)
        out.append(Candidate(f"B×{_fraction(bm)} {'P' if p else 'T'}×{_fraction(tm)}", b, p, ib, bm, tm))
    return out


@dataclass(frozen=True)
class Rung:
    """One round of successive halving: how many candidates run, on how many rows each."""

    candidates: int
    rows: int


def halving_schedule(candidates: int, sample_rows: int, *, eta: int = DEFAULT_ETA, min_rows: int = 1) -> list[Rung]:
    """Successive halving: each rung keeps ``ceil(n / eta)`` and multiplies the rows by ``eta``.

    It stops when at most ``eta`` candidates are left, which run on the whole sample (ranking ``eta``
    candidates on a smaller sample first would save nothing). Rows are at least ``min_rows`` (but never
    above the sample) and never shrink from one rung to the next.

    >>> halving_schedule(8, 10_000)
    [Rung(candidates=8, rows=2500), Rung(candidates=4, rows=5000), Rung(candidates=2, rows=10000)]
    >>> halving_schedule(2, 10_000)
    [Rung(candidates=2, rows=10000)]
    >>> halving_schedule(5, 1000, eta=3, min_rows=600)
    [Rung(candidates=5, rows=600), Rung(candidates=2, rows=1000)]
    """
    if candidates < 1:
        raise ConfigError("halving_schedule needs at least one candidate")
    if eta < 2:
        raise ConfigError(f"eta must be 2 or more, got {eta}")
    sample_rows = max(1, int(sample_rows))
    counts = [candidates]
    while counts[-1] > eta:
        counts.append(math.ceil(counts[-1] / eta))
    rungs: list[Rung] = []
    last = len(counts) - 1
    previous = 0
    for i, n in enumerate(counts):
        rows = sample_rows // eta ** (last - i)
        rows = min(sample_rows, max(rows, min_rows, previous, 1))
        rungs.append(Rung(n, rows))
        previous = rows
    return rungs


def parse_multiples(text: str | None, name: str = "multiples") -> tuple[float, ...] | None:
    """``"0.5,1,2"`` → ``(0.5, 1.0, 2.0)``; ``None`` for no text. Each must be a number above 0.

    >>> parse_multiples("0.25, 1,4")
    (0.25, 1.0, 4.0)
    """
    if text is None:
        return None
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{name} must be comma-separated numbers such as 0.5,1,2, got {text!r}") from exc
    if not values or any(not math.isfinite(v) or v <= 0 for v in values):
        raise ConfigError(f"{name} must be numbers above 0 such as 0.5,1,2, got {text!r}")
    return values


def sample_partitions(partitions: int, rows: int, sample_rows: int, concurrency: int) -> int:
    """Partitions for a ``sample_rows`` sample so each holds as many rows as in the full run, but no fewer
    than ``min(partitions, concurrency)`` (every actor's node gets a task) and no more than the rows.

    >>> sample_partitions(977, 1_000_000, 100_000, 16)
    98
    >>> sample_partitions(40, 20_000, 1000, 8)
    8
    """
    scaled = round(partitions * sample_rows / max(rows, 1))
    return max(1, min(sample_rows, max(scaled, min(partitions, concurrency))))


# ---------------------------------------------------------------------------------------------------
# Results


def extrapolated_wall_s(
    calls: Sequence[dict[str, Any]], wall_s: float, sample_rows: int, full_rows: int, concurrency: int
) -> float | None:
    """Wall time on ``full_rows`` rows predicted from a run on ``sample_rows`` of them.

    The rows the sample did not run are added at the actors' steady rate: each actor's rows over the span
    from its first call's start to its last call's end (so the gaps between its calls count, and the wait
    before its first call and after its last do not), averaged over the actors that ran and times
    ``concurrency`` (a sample too small to reach every actor still predicts a full pool). The query's start,
    its ramp and its tail are taken as they were in the sample. ``None`` without a call to rate.

    >>> calls = [{"actor": a, "start": 1.0 + 0.1 * i, "end": 1.1 + 0.1 * i, "rows": 10} for a in "xy" for i in (0, 1)]
    >>> extrapolated_wall_s(calls, wall_s=2.0, sample_rows=40, full_rows=440, concurrency=2)  # 2 × 100 rows/s
    4.0
    """
    if full_rows <= sample_rows:
        return wall_s
    spans: dict[str, list[float]] = {}
    for call in calls:
        start, end, rows = float(call["start"]), float(call["end"]), float(call.get("rows") or 0)
        span = spans.setdefault(str(call["actor"]), [start, end, 0.0])
        span[0], span[1], span[2] = min(span[0], start), max(span[1], end), span[2] + rows
    rates = [rows / (end - start) for start, end, rows in spans.values() if end > start and rows > 0]
    if not rates:
        return None
    return round(wall_s + (full_rows - sample_rows) / (statistics.fmean(rates) * max(concurrency, 1)), 4)


def _faster(trial: Trial) -> float:
    """Sort key and speed of a trial: the inverse of its predicted full-data time (0 when unknown)."""
    return 1.0 / trial.full_s if trial.full_s else 0.0


@dataclass
class Trial:
    """One candidate on one rung: measured (``wall_s`` set), pruned by the simulator, or failed."""

    candidate: str
    batch_size: int
    partitions: int | None
    into_batches: int | None
    rung: int | None = None
    sample_rows: int | None = None
    sample_partitions: int | None = None
    wall_s: float | None = None
    rows_per_s: float | None = None
    # Wall time predicted for all the data from this sample run (extrapolated_wall_s): what trials are ranked by.
    full_s: float | None = None
    utilization: float | None = None
    predicted_s: float | None = None
    predicted_oom: bool = False
    pruned: bool = False
    error: str | None = None
    note: str = ""

    @property
    def measured(self) -> bool:
        return self.wall_s is not None


@dataclass
class TuneResult:
    """What :func:`tune` found: the best plan, the formula plan it started from, and every trial."""

    best: ScalingPlan
    formula: ScalingPlan
    trials: list[Trial]
    cached: bool
    elapsed_s: float
    speedup: float | None = None
    sample_rows: int = 0
    rows: int = 0
    cache_path: str | None = None
    out: str | None = None
    notes: list[str] = field(default_factory=list)
    # The budget that cut this search short (None: it ran every round). A cached entry cut short answers
    # a rerun with the same or a smaller budget (that rerun could get no further), not a larger one.
    budget_cut_s: float | None = None

    @property
    def improved(self) -> bool:
        return self.best.to_dict() != self.formula.to_dict() and (self.speedup or 0) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": TUNE_FORMAT_VERSION,
            "best": self.best.to_dict(),
            "formula": self.formula.to_dict(),
            "trials": [asdict(t) for t in self.trials],
            "cached": self.cached,
            "elapsed_s": round(self.elapsed_s, 3),
            "speedup": self.speedup,
            "sample_rows": self.sample_rows,
            "rows": self.rows,
            "cache_path": self.cache_path,
            "out": self.out,
            "notes": list(self.notes),
            "budget_cut_s": self.budget_cut_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TuneResult:
        if data.get("version") != TUNE_FORMAT_VERSION:
            raise ConfigError("tune cache entry has another format version: it will be made again")
        return cls(
            best=ScalingPlan.from_dict(data["best"]),
            formula=ScalingPlan.from_dict(data["formula"]),
            trials=[Trial(**{k: v for k, v in t.items() if k in Trial.__dataclass_fields__}) for t in data["trials"]],
            cached=bool(data.get("cached")),
            elapsed_s=float(data.get("elapsed_s") or 0.0),
            speedup=data.get("speedup"),
            sample_rows=int(data.get("sample_rows") or 0),
            rows=int(data.get("rows") or 0),
            cache_path=data.get("cache_path"),
            out=data.get("out"),
            notes=list(data.get("notes") or []),
            budget_cut_s=data.get("budget_cut_s"),
        )

    def summary(self) -> str:
        """One line: what won, by how much, and whether it came from the cache."""
        b = self.best
        what = f"partitions {b.partitions}" if b.partitions is not None else f"into_batches {b.into_batches}"
        head = "cached: " if self.cached else ""
        if self.improved:
            return (
                f"{head}tuned plan: {what}, batch size {b.batch_size} — {self.speedup:.2f}× as fast as the formula "
                f"plan on all {self.rows:,} rows, extrapolated from a {self.sample_rows:,}-row sample"
            )
        return (
            f"{head}the formula plan stays: no candidate beat its time by {MIN_IMPROVEMENT:.0%} (all {self.rows:,} "
            f"rows, extrapolated from a {self.sample_rows:,}-row sample) — {what}, batch size {b.batch_size}"
        )

    def table(self) -> Any:
        """The trials as a ``rich.table.Table``: one row per candidate per rung (pruned ones once)."""
        from rich.table import Table

        table = Table(title="daftscale tune — trials" + (" (cached)" if self.cached else ""), title_justify="left")
        columns = (
            ("candidate", "left"),
            ("partitions" if self.formula.strategy == "shuffle" else "into_batches", "right"),
            ("batch", "right"),
            ("rung", "right"),
            ("sample rows", "right"),
            ("wall_s", "right"),
            ("rows/s", "right"),
            ("full_s", "right"),
            ("util", "right"),
            ("sim_s", "right"),
            ("pruned", "left"),
            ("oom", "left"),
            ("note", "left"),
        )
        for name, justify in columns:
            table.add_column(name, justify=justify)  # type: ignore[arg-type]

        def num(value: Any, fmt: str) -> str:
            return "" if value is None else format(value, fmt)

        for t in self.trials:
            table.add_row(
                t.candidate,
                num(t.partitions if t.partitions is not None else t.into_batches, ","),
                num(t.batch_size, ","),
                num(t.rung, "d"),
                num(t.sample_rows, ","),
                num(t.wall_s, ".2f"),
                num(t.rows_per_s, ",.0f"),
                num(t.full_s, ".1f"),
                num(t.utilization, ".0%"),
                num(t.predicted_s, ".1f"),
                "simulator" if t.pruned else "",
                "predicted" if t.predicted_oom else "",
                t.error or t.note,
            )
        return table


# ---------------------------------------------------------------------------------------------------
# The sampled plan


@dataclass(frozen=True)
class SampledPlan(ScalingPlan):
    """A plan whose :meth:`apply` first takes ``df.limit(sample_rows)``, then applies the scaling step.

    ``partitions`` is already the sample's (:func:`sample_partitions`); ``full_partitions`` is the
    full-data plan's. ``inputs["rows"]`` is the sample's rows, so a run report calibrates the simulator
    with what actually ran.
    """

    sample_rows: int = 0
    full_partitions: int | None = None

    def apply(self, df: Any) -> Any:
        return super().apply(df.limit(self.sample_rows))

    @classmethod
    def of(cls, plan: ScalingPlan, sample_rows: int) -> SampledPlan:
        values = {f.name: getattr(plan, f.name) for f in fields(ScalingPlan)}
        rows = int(plan.inputs.get("rows") or sample_rows)
        sample_rows = min(sample_rows, rows)
        if plan.partitions is not None:
            values["partitions"] = sample_partitions(plan.partitions, rows, sample_rows, plan.concurrency)
        values["inputs"] = {**plan.inputs, "rows": sample_rows}
        return cls(**values, sample_rows=sample_rows, full_partitions=plan.partitions)


# ---------------------------------------------------------------------------------------------------
# Cache


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> str:
    """``explicit``, else ``$DAFTSCALE_CACHE_DIR/tune``, else ``~/.cache/daftscale/tune``."""
    if explicit is not None:
        return os.fspath(explicit)
    root = os.environ.get("DAFTSCALE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "daftscale")
    return os.path.join(root, "tune")


def _pipeline_source(pipe: Pipeline) -> str:
    parts = [pipe.name]
    if pipe.source and os.path.isfile(pipe.source):
        with contextlib.suppress(OSError), open(pipe.source, encoding="utf-8", errors="replace") as handle:
            parts.append(handle.read())
    with contextlib.suppress(OSError, TypeError):
        parts.append(inspect.getsource(pipe.build))
    return "\n".join(parts)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in sorted(value.items())}
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def cache_key(pipe: Pipeline, data: DataProfile, cluster: ClusterSpec, settings: dict[str, Any]) -> str:
    """Hash of the pipeline's source text, the data profile (rows, bytes, columns), the cluster's shape,
    the planner options and the search settings: equal inputs give an equal key."""
    payload = {
        "version": TUNE_FORMAT_VERSION,
        "pipeline": _pipeline_source(pipe),
        "profile": {
            "rows": data.rows,
            "bytes_per_row": round(data.bytes_per_row, 3),
            "uncompressed_bytes": data.uncompressed_bytes,
            "columns": [[c.name, c.type, c.uncompressed_bytes, c.heavy] for c in data.columns],
        },
        "cluster": cluster.shape(),
        "settings": _jsonable(settings),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _read_cache(path: str, budget_s: float) -> TuneResult | None:
    """The cached result at ``path`` if it answers a search with ``budget_s``, else None."""
    try:
        with open(path, encoding="utf-8") as handle:
            hit = TuneResult.from_dict(json.load(handle))
    except (OSError, ValueError, KeyError, TypeError, DaftscaleError):
        return None  # a missing, stale or damaged entry is simply made again
    if hit.budget_cut_s is not None and budget_s > hit.budget_cut_s:
        return None  # more budget than the cached search had: it may get further
    hit.cached, hit.cache_path = True, path
    return hit


# ---------------------------------------------------------------------------------------------------
# The search


def _check_out(out: str | None, overwrite: bool) -> None:
    if out is None:
        return
    if os.path.isdir(out):
        raise ConfigError(f"--out {out} is a directory: pass a file path such as {os.path.join(out, 'plan.json')}")
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"--out {out} already exists: pass --overwrite, or choose another file")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError(f"--out {out}: directory {parent} does not exist; create it first")


def _candidate_plan(
    formula: ScalingPlan, cand: Candidate, data: DataProfile, cluster: ClusterSpec, kwargs: dict[str, Any]
) -> ScalingPlan:
    """The full-data plan for a candidate: the planner's own plan at its batch size, with its task lever."""
    from daftscale.plan import plan as make_plan

    if cand.is_formula:
        return formula
    base = make_plan(data, cluster, **{**kwargs, "batch_size": cand.batch_size})
    levers = dict(base.levers)
    steps = list(base.steps)
    if base.strategy == "shuffle":
        assert cand.partitions is not None
        levers["partitions"] = f"df.{base.partition_op}({cand.partitions}) sets the tasks before the UDF"
        steps.append(
            f"Partitions set to {cand.partitions:,} (tuner candidate: ×{_fraction(cand.task_multiple)} the formula "
            f"plan's {formula.partitions:,}); apply df.{base.partition_op}({cand.partitions})."
        )
        return replace(base, partitions=cand.partitions, levers=levers, steps=tuple(steps))
    levers["into_batches"] = f"df.into_batches({cand.into_batches}) sets rows per task reaching the UDF"
    steps.append(
        f"into_batches set to {cand.into_batches:,} rows per task (tuner candidate: ×{_fraction(cand.task_multiple)} "
        f"the formula plan's {formula.into_batches:,})."
    )
    return replace(base, into_batches=cand.into_batches, levers=levers, steps=tuple(steps))


def _max_batch_size(
    formula: ScalingPlan, data: DataProfile, cluster: ClusterSpec, kwargs: dict[str, Any], biggest: int
) -> int | None:
    """The batch size an actor's memory bounds B to (the planner lowers a bigger one), or None if unbounded."""
    from daftscale.plan import plan as make_plan

    probe_plan = make_plan(data, cluster, **{**kwargs, "batch_size": biggest})
    return probe_plan.batch_size if probe_plan.batch_size < biggest else None


class _Console:
    """Progress lines on stderr through rich (or nothing)."""

    def __init__(self, enabled: bool, console: Any) -> None:
        self.console = None
        if enabled:
            from rich.console import Console

            self.console = console or Console(stderr=True)

    def say(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False)


def tune(
    pipeline_or_path: Pipeline | str | os.PathLike[str],
    *,
    runner: str = "native",
    ray_address: str | None = None,
    local_cluster: str | tuple[int, int] | None = None,
    sample: float = DEFAULT_SAMPLE,
    budget_s: float = DEFAULT_BUDGET_S,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: bool = True,
    console: Any = None,
    batch_multiples: Sequence[float] = DEFAULT_MULTIPLES,
    partition_multiples: Sequence[float] = DEFAULT_MULTIPLES,
    eta: int = DEFAULT_ETA,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    measured_costs: bool = True,
    **planner_kwargs: Any,
) -> TuneResult:
    """Search partitions × batch size around the formula plan on a sample; return (and save) the best plan.

    Usable in-process on a running Ray cluster (``runner="ray"`` joins it and leaves it running), on
    Daft's native runner, or on a local cluster started for the search (``local_cluster="2x2"``).

    Args:
        pipeline_or_path: a :class:`~daftscale.pipeline.Pipeline` or the path of a pipeline file.
        runner, ray_address, local_cluster: where trials run, as for :func:`daftscale.run.run`.
        sample: fraction of the rows at the scaling step the last rung runs on (0 < sample ≤ 1).
        budget_s: wall-clock budget; a trial starts only if it, and the two runs that confirm a win, fit
            in it; when one does not, the search stops and the best measured so far wins if it is confirmed.
        out: write the winning plan there (atomically); an existing file needs ``overwrite``.
        cache_dir: where results are cached (default ``$DAFTSCALE_CACHE_DIR/tune`` or
            ``~/.cache/daftscale/tune``); ``use_cache=False`` searches again (and refreshes the entry).
        progress: one line per trial on stderr (``console`` to redirect it).
        batch_multiples, partition_multiples: the grid around the formula's batch size and partitions
            (``into_batches`` for streaming plans).
        eta: successive halving keeps 1/eta per rung; max_candidates: most candidates measured.
        measured_costs: add the formula plan made with the UDF costs fitted from the first rung's runs
            (only when the planner had no UDF profile).
        **planner_kwargs: options for :func:`daftscale.plan.plan`, over the pipeline's own.
    """
    from daftscale.run import resolve_runner

    started = time.monotonic()
    runner = resolve_runner(runner, ray_address, local_cluster)
    if not (isinstance(sample, (int, float)) and 0 < sample <= 1):
        raise ConfigError(f"--sample must be a fraction above 0 and at most 1, got {sample!r}: e.g. 0.1")
    budget_s = require_positive_number(budget_s, "budget")
    if int(max_candidates) < 1:
        raise ConfigError(f"max_candidates must be 1 or more, got {max_candidates}")
    out_path = os.fspath(out) if out is not None else None
    _check_out(out_path, overwrite)
    pipe = load_pipeline(pipeline_or_path)
    kwargs = {**pipe.planner_kwargs, **{k: v for k, v in planner_kwargs.items() if v is not None}}
    say = _Console(progress, console)

    batch_multiples = tuple(float(m) for m in batch_multiples)  # floats: 1 and 1.0 give one cache key
    partition_multiples = tuple(float(m) for m in partition_multiples)
    hit = None
    if use_cache and local_cluster is not None and os.path.isfile(str(pipeline_or_path)):
        settings = _settings(
            kwargs,
            runner,
            float(sample),
            batch_multiples,
            partition_multiples,
            int(eta),
            int(max_candidates),
            bool(measured_costs),
        )
        hit = _cached_before_start(os.fspath(pipeline_or_path), pipe, local_cluster, settings, cache_dir, budget_s)
        if hit is not None:
            say.say(f"[bold]cached[/bold]: tune result for these inputs from {hit.cache_path} (no cluster started)")
    if hit is not None:
        result = hit
    else:
        from daftscale.run import Session

        with Session(runner, ray_address=ray_address, local_cluster=local_cluster) as session:
            result = _search(
                pipe,
                session,
                kwargs,
                say=say,
                sample=float(sample),
                budget_s=budget_s,
                started=started,
                cache_root=cache_dir,
                use_cache=use_cache,
                batch_multiples=batch_multiples,
                partition_multiples=partition_multiples,
                eta=int(eta),
                max_candidates=int(max_candidates),
                measured_costs=bool(measured_costs),
            )
    if out_path is not None:
        _check_out(out_path, overwrite)  # again: the file may have appeared while the search ran
        atomic_write(out_path, (result.best.to_json() + "\n").encode())
        result.out = out_path
    result.elapsed_s = time.monotonic() - started
    return result


def _settings(
    kwargs: dict[str, Any],
    runner: str,
    sample: float,
    batch_multiples: tuple[float, ...],
    partition_multiples: tuple[float, ...],
    eta: int,
    max_candidates: int,
    measured_costs: bool = True,
) -> dict[str, Any]:
    """The search settings that change its result, for the cache key (the budget only limits it)."""
    return {
        "planner": kwargs,
        "sample": sample,
        "batch_multiples": batch_multiples,
        "partition_multiples": partition_multiples,
        "eta": eta,
        "max_candidates": max_candidates,
        "measured_costs": measured_costs,
        "runner": runner,
    }


def _profile_file(path: str) -> dict[str, Any]:
    """The data profile at a pipeline file's scaling step, on Daft's native runner (run in a subprocess)."""
    import daft

    from daftscale.profile import profile_dataframe

    daft.set_runner_native()
    return profile_dataframe(probe(load_pipeline(path)).scaling_input).to_dict()


def _cached_before_start(
    path: str,
    pipe: Pipeline,
    local_cluster: str | tuple[int, int],
    settings: dict[str, Any],
    root: Any,
    budget_s: float,
) -> TuneResult | None:
    """A cached result for a search on a local cluster, found without starting the cluster.

    Starting a local Ray cluster takes tens of seconds, and Daft's runner is locked per process, so the
    profile for the cache key is taken in a short native-runner subprocess; the cluster's shape is known
    from ``NxC``. Any failure or a profile that differs in the least just means no hit: the search then
    starts the cluster and profiles there as usual.
    """
    import subprocess
    import sys

    from daftscale.cluster import parse_local_cluster

    nodes, cpus = parse_local_cluster(local_cluster) if isinstance(local_cluster, str) else local_cluster
    code = "import json, sys\nfrom daftscale.tune import _profile_file\nprint(json.dumps(_profile_file(sys.argv[1])))"
    env = {**os.environ, "DAFT_PROGRESS_BAR": "0"}
    env.pop("RAY_ADDRESS", None)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, os.path.abspath(path)],
            capture_output=True,
            text=True,
            timeout=CACHE_PROBE_TIMEOUT_S,
            env=env,
            check=True,
        )
        data = DataProfile.from_dict(json.loads(done.stdout.strip().splitlines()[-1]))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, TypeError, KeyError):
        return None
    shape = ClusterSpec(nodes=int(nodes), cpus_per_node=float(cpus), gpus_per_node=0.0)
    path_json = os.path.join(cache_dir(root), f"{cache_key(pipe, data, shape, settings)}.json")
    return _read_cache(path_json, budget_s)


def _search(
    pipe: Pipeline,
    session: Session,
    kwargs: dict[str, Any],
    *,
    say: _Console,
    sample: float,
    budget_s: float,
    started: float,
    cache_root: str | os.PathLike[str] | None,
    use_cache: bool,
    batch_multiples: tuple[float, ...],
    partition_multiples: tuple[float, ...],
    eta: int,
    max_candidates: int,
    measured_costs: bool = True,
) -> TuneResult:
    from daftscale.plan import plan as make_plan
    from daftscale.profile import profile_dataframe

    runner, cluster = session.runner, session.cluster
    data = profile_dataframe(probe(pipe).scaling_input)
    formula = make_plan(data, cluster, **kwargs)
    settings = _settings(
        kwargs, runner, sample, batch_multiples, partition_multiples, eta, max_candidates, measured_costs
    )
    key = cache_key(pipe, data, cluster, settings)
    path = os.path.join(cache_dir(cache_root), f"{key}.json")
    if use_cache:
        hit = _read_cache(path, budget_s)
        if hit is not None:
            say.say(f"[bold]cached[/bold]: tune result for these inputs from {path}")
            return hit

    search = _Search(
        pipe, session, kwargs, data, formula, say, budget_s=budget_s, started=started, fit_costs=measured_costs
    )
    result = search.run(sample, batch_multiples, partition_multiples, eta, max_candidates)
    result.cache_path = path
    if search.stopped_by_budget:
        result.budget_cut_s = budget_s
        result.notes.append(f"the {budget_s:g} s budget cut the search short: a rerun with more budget searches again")
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next search
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return result


class _Search:
    """One search's state: candidates, their full-data plans, the trials run so far, the clock."""

    def __init__(
        self,
        pipe: Pipeline,
        session: Session,
        kwargs: dict[str, Any],
        data: DataProfile,
        formula: ScalingPlan,
        say: _Console,
        *,
        budget_s: float,
        started: float,
        fit_costs: bool = True,
    ) -> None:
        # Trials run on the tuner's open session (its runtime, its measurement): Session.execute.
        self.pipe, self.session, self.kwargs = pipe, session, kwargs
        self.runner, self.cluster = session.runner, session.cluster
        # True until the search's one cost fit is made. Only where the planner had no costs: with a UDF profile
        # the formula already used them.
        self.fit_pending = fit_costs and kwargs.get("udf_profile") is None
        self.calls: list[dict[str, Any]] = []  # every measured trial's UDF calls, for that fit
        self.data, self.formula, self.say = data, formula, say
        self.budget_s, self.started = budget_s, started
        self.trials: list[Trial] = []
        self.notes: list[str] = []
        self.plans: dict[str, ScalingPlan] = {}
        self.predicted: dict[str, tuple[float, bool]] = {}
        self.last_trial_s: tuple[int, float] | None = None
        self.last_report: RunReport | None = None
        self.stopped_by_budget = False
        self._keeps_rows: bool | None = None

    def keeps_rows(self) -> bool:
        """Whether the pipeline's output is row-for-row with its scaling step (a groupby after the UDF is not)."""
        if self._keeps_rows is None:
            from daftscale.run import output_keeps_rows

            self._keeps_rows = output_keeps_rows(self.pipe)
        return self._keeps_rows

    # -- helpers -----------------------------------------------------------------------------------

    def out_of_time(self, rows: int, then: int = 0) -> bool:
        """Would a trial on ``rows`` rows, and ``then`` more of the same size, end past the budget?

        Estimated from the last trial. The search's trials pass ``then=CONFIRMATION_RUNS`` so that the
        repeat a win needs still fits: a search that spends the whole budget exploring ends with one-run
        wins it cannot trust (:meth:`_confirm`), so it might as well not have explored.
        """
        elapsed = time.monotonic() - self.started
        if self.last_trial_s is None:
            return elapsed >= self.budget_s
        last_rows, last_s = self.last_trial_s
        return elapsed + (1 + then) * last_s * max(1.0, rows / max(last_rows, 1)) > self.budget_s

    def measure(self, cand: Candidate, rung: int, rows: int) -> Trial:
        full = self.plans[cand.name]
        sampled = SampledPlan.of(full, rows)
        predicted = self.predicted.get(cand.name)
        trial = Trial(
            cand.name,
            cand.batch_size,
            cand.partitions,
            cand.into_batches,
            rung=rung,
            sample_rows=sampled.sample_rows,
            sample_partitions=sampled.partitions,
            predicted_s=predicted[0] if predicted else None,
            predicted_oom=predicted[1] if predicted else False,
        )
        t0 = time.monotonic()
        try:
            # run's own check compares with the full input's rows; the exact check on the sample is below.
            report = self.session.execute(self.pipe, plan=sampled, planner_kwargs=self.kwargs, check_rows=False)
        except DaftscaleError as exc:
            trial.error = str(exc)
            self.trials.append(trial)
            self.say.say(f"  rung {rung} · {cand.name}: failed: {exc}")
            if cand.is_formula:
                raise
            return trial
        self.last_trial_s = (sampled.sample_rows, time.monotonic() - t0)
        if report.rows_out != sampled.sample_rows and self.keeps_rows():
            # Never a silent short output: a trial that lost or duplicated rows stops the search.
            raise RunError(
                f"trial {cand.name} returned {report.rows_out:,} rows for a {sampled.sample_rows:,}-row sample: "
                "rows were lost or duplicated in a pipeline that keeps every row after plan.apply; re-run it "
                "(check the Ray logs for dead workers)"
            )
        self.calls.extend(report.udf_calls)
        trial.wall_s = report.wall_s
        trial.rows_per_s = report.rows_out / report.wall_s if report.wall_s > 0 else None
        # In rows at the UDF, which the calls' rates count (an explode or filter after plan.apply changes them).
        udf_rows = sum(int(c.get("rows") or 0) for c in report.udf_calls) or sampled.sample_rows
        growth = udf_rows / max(sampled.sample_rows, 1)
        trial.full_s = extrapolated_wall_s(
            report.udf_calls, report.wall_s, udf_rows, round(self.data.rows * growth), full.concurrency
        )
        trial.utilization = report.actor_utilization
        self.trials.append(trial)
        self.say.say(
            f"  rung {rung} · {cand.name:<12} partitions {sampled.partitions or '-'!s:>5} batch {cand.batch_size:>5} "
            f"on {sampled.sample_rows:,} rows: {report.wall_s:.2f} s ({trial.full_s or 0:.1f} s on all rows), "
            f"utilisation {'unknown' if report.actor_utilization is None else format(report.actor_utilization, '.0%')}"
        )
        self.last_report = replace(report, rows_in=sampled.sample_rows)
        return trial

    def prune(self, candidates: list[Candidate], report: RunReport, max_candidates: int) -> list[Candidate]:
        """Simulate every candidate with costs calibrated from ``report``; keep the promising ones."""
        try:
            costs = costs_from_report(report.to_dict())
        except DaftscaleError as exc:
            self.notes.append(f"simulator not calibrated ({exc}): no candidate pruned")
            return candidates[:max_candidates]
        for cand in candidates:
            try:
                sim = simulate(self.plans[cand.name], self.cluster, costs=costs)
                self.predicted[cand.name] = (sim.makespan_s, bool(sim.oom))
            except DaftscaleError as exc:
                self.notes.append(f"{cand.name}: not simulated ({exc})")
        best = min((p for p, _ in self.predicted.values()), default=None)
        keep: list[Candidate] = []
        ranked = sorted(candidates, key=lambda c: (not c.is_formula, self.predicted.get(c.name, (math.inf,))[0]))
        for cand in ranked:
            seconds, oom = self.predicted.get(cand.name, (None, False))
            bad = seconds is not None and best is not None and seconds > PRUNE_SLOWER_THAN * best
            if cand.is_formula or (not oom and not bad and len(keep) < max_candidates):
                keep.append(cand)
                continue
            why = (
                "out of memory"
                if oom
                else f"{seconds / best:.1f}× the best"
                if bad and seconds is not None and best
                else f"not in the top {max_candidates}"
            )
            self.trials.append(
                Trial(
                    cand.name,
                    cand.batch_size,
                    cand.partitions,
                    cand.into_batches,
                    predicted_s=seconds,
                    predicted_oom=oom,
                    pruned=True,
                    note=why,
                )
            )
        self.notes.append(f"simulator calibrated from the formula plan's first run ({costs.source})")
        return keep

    # -- the search --------------------------------------------------------------------------------

    def run(
        self,
        sample: float,
        batch_multiples: tuple[float, ...],
        partition_multiples: tuple[float, ...],
        eta: int,
        max_candidates: int,
    ) -> TuneResult:
        formula, data = self.formula, self.data
        rows = data.rows
        sample_rows = max(1, min(rows, round(rows * sample)))
        task_multiples = partition_multiples
        if formula.strategy == "shuffle" and self.runner == "native":
            task_multiples = (1.0,)  # Daft's native runner ignores partition operations: nothing to tune there
            self.notes.append("native runner: partitions are a no-op there, so only the batch size is tuned")
        biggest = max(1, round(formula.batch_size * max(batch_multiples)))
        max_batch = _max_batch_size(formula, data, self.cluster, self.kwargs, biggest)
        grid = candidate_grid(
            formula.batch_size,
            partitions=formula.partitions if formula.strategy == "shuffle" else None,
            into_batches=formula.into_batches if formula.strategy == "streaming" else None,
            rows=rows,
            batch_multiples=batch_multiples,
            task_multiples=task_multiples,
            max_batch_size=max_batch,
        )
        for cand in grid:
            self.plans[cand.name] = _candidate_plan(formula, cand, data, self.cluster, self.kwargs)
        biggest_batch = max(c.batch_size for c in grid)
        min_rows = min(sample_rows, MIN_BATCHES_PER_ACTOR * biggest_batch * formula.concurrency)
        self.say.say(
            f"[bold]daftscale tune[/bold]: {len(grid)} candidates around the formula plan "
            f"({_describe(formula)}), on up to {sample_rows:,} of {rows:,} rows"
        )

        # The first real measurement: the formula plan on the smallest rung's sample; it calibrates the simulator.
        first_rows = halving_schedule(min(len(grid), max_candidates), sample_rows, eta=eta, min_rows=min_rows)[0].rows
        formula_cand = grid[0]
        first = self.measure(formula_cand, 0, first_rows)
        survivors = self.prune(grid, self.last_report, max_candidates) if len(grid) > 1 and self.last_report else grid
        schedule = halving_schedule(len(survivors), sample_rows, eta=eta, min_rows=min_rows)
        if len(schedule) > 1 and schedule[0].rows > first_rows:
            # Fewer survivors than planned for: start the halving on the calibration run's rows so that run
            # counts as the formula's first-rung measurement (rows still never shrink from rung to rung).
            schedule[0] = Rung(schedule[0].candidates, first_rows)
        if schedule[0].rows != first_rows:
            first.note = "calibration run"
        self.say.say(
            f"  {len(grid) - len(survivors)} pruned by the simulator; halving: "
            + ", ".join(f"{r.candidates} on {r.rows:,} rows" for r in schedule)
        )

        results: dict[int, dict[str, Trial]] = {}
        alive = survivors
        stopped = False
        for index, rung in enumerate(schedule):
            results[index] = {}
            ordered = sorted(alive, key=lambda c: (not c.is_formula, self.predicted.get(c.name, (0.0,))[0]))
            for cand in ordered:
                if index == 0 and cand.is_formula and first.sample_rows == rung.rows:
                    results[index][cand.name] = first
                    continue
                if self.out_of_time(rung.rows, then=CONFIRMATION_RUNS) and (index > 0 or not cand.is_formula):
                    stopped = True
                    break
                results[index][cand.name] = self.measure(cand, index, rung.rows)
                if index == 0 and (extra := self.run_measured_costs(grid, results[index], rung.rows)):
                    alive = [*alive, extra]
            if stopped:
                self.stopped_by_budget = True
                self.notes.append(f"budget of {self.budget_s:g} s reached during rung {index}: best so far wins")
                break
            if index == 0 and self.fit_pending:
                self.notes.append("measured costs: the first rung ran one batch size only, so no cost fit")
            if index + 1 < len(schedule):
                keep = schedule[index + 1].candidates
                ranked = sorted(
                    (t for t in results[index].values() if t.full_s),
                    key=lambda t: -_faster(t),
                )
                names = {t.candidate for t in ranked[:keep]} | {formula_cand.name}
                alive = [c for c in alive if c.name in names]
        return self._finish(results, grid, sample_rows)

    def run_measured_costs(self, grid: list[Candidate], first_rung: dict[str, Trial], rows: int) -> Candidate | None:
        """Once the first rung has run two batch sizes, make the measured-costs candidate and run it there.

        As soon as the calls can separate the two costs, not after the rung: on a tight budget the rung may
        end before its last candidate, and this one is the likeliest to matter.
        """
        if not self.fit_pending or len({t.batch_size for t in self.trials if t.measured}) < 2:
            return None
        self.fit_pending = False
        extra = self.measured_costs_candidate(grid)
        if extra is None:
            return None
        if self.out_of_time(rows, then=CONFIRMATION_RUNS):
            self.notes.append(f"no time left to run the {extra.name} candidate")
            return None
        first_rung[extra.name] = self.measure(extra, 0, rows)
        return extra

    def measured_costs_candidate(self, grid: list[Candidate]) -> Candidate | None:
        """The formula plan made with the UDF costs fitted over the calls measured so far, as a new candidate.

        Appended to ``grid`` (so a confirmation run finds it) unless its numbers are already there. The
        user's declared batch size is dropped for it: the batch size is what the fit is for.
        """
        from daftscale.plan import plan as make_plan
        from daftscale.profile import UdfProfile
        from daftscale.report import fit_udf_cost

        fit = fit_udf_cost(self.calls)
        if fit is None or fit["seconds_per_row"] <= 0:
            self.notes.append("measured costs: the UDF calls so far do not separate per-call from per-row cost")
            return None
        profile = UdfProfile(
            seconds_per_row=fit["seconds_per_row"],
            seconds_per_batch=fit["seconds_per_batch"],
            rows_sampled=sum(int(c["rows"]) for c in self.calls),
            batches=len(self.calls),
        )
        kwargs = {k: v for k, v in self.kwargs.items() if k != "batch_size"}
        measured = make_plan(self.data, self.cluster, **kwargs, udf_profile=profile)
        fitted = (
            f"UDF costs fitted over the trials' {len(self.calls):,} calls: "
            f"{profile.seconds_per_batch * 1e3:.1f} ms per call + {profile.seconds_per_row * 1e3:.3f} ms per row"
        )
        formula = self.formula
        if measured.strategy != formula.strategy:
            self.notes.append(f"measured costs: {fitted}; they change the strategy, which the tuner keeps")
            return None
        shuffle = formula.strategy == "shuffle"
        numbers = (
            measured.batch_size,
            measured.partitions if shuffle else None,
            None if shuffle else measured.into_batches,
        )
        same = next((c for c in grid if (c.batch_size, c.partitions, c.into_batches) == numbers), None)
        if same is not None:
            self.notes.append(f"measured costs: {fitted}; the planner then gives {same.name}'s numbers")
            return None
        formula_task = formula.partitions if shuffle else formula.into_batches
        cand = Candidate(
            "measured costs",
            *numbers,
            batch_multiple=measured.batch_size / formula.batch_size,
            task_multiple=(numbers[1] or numbers[2] or 1) / (formula_task or 1),
        )
        self.plans[cand.name] = replace(
            measured, steps=(*measured.steps, f"Tuner candidate: the formula plan with the {fitted}.")
        )
        grid.append(cand)
        self.notes.append(f"measured costs: {fitted}; candidate {_describe(measured)}")
        return cand

    def _finish(self, results: dict[int, dict[str, Trial]], grid: list[Candidate], sample_rows: int) -> TuneResult:
        # The last rung in which the formula plan ran decides (the formula runs first in every rung).
        last = max(i for i, r in results.items() if "formula" in r and r["formula"].full_s)
        rung = results[last]
        base = _faster(rung["formula"])
        measured = [t for t in rung.values() if t.full_s]
        winner = max(measured, key=_faster)
        speedup = _faster(winner) / base if base else None
        if winner.candidate != "formula" and (speedup or 0) < 1 + MIN_IMPROVEMENT:
            self.notes.append(f"best challenger {winner.candidate} got {speedup or 0:.2f}× the formula: within noise")
            winner = rung["formula"]
        elif winner.candidate != "formula":
            earlier = self._won_earlier(winner.candidate, results, last)
            if earlier is not None:
                speedup = earlier
            else:
                winner, speedup = self._confirm(winner, rung["formula"], grid, last)
        chosen = self.plans[winner.candidate]
        formula_speedup = speedup if winner.candidate != "formula" else 1.0
        runs = sum(1 for t in self.trials if t.measured)
        best = _tuned_plan(chosen, self.formula, winner, rung["formula"], len(grid), runs, formula_speedup)
        elapsed = time.monotonic() - self.started
        return TuneResult(
            best=best,
            formula=self.formula,
            trials=self.trials,
            cached=False,
            elapsed_s=elapsed,
            speedup=round(formula_speedup, 4) if formula_speedup else None,
            sample_rows=winner.sample_rows or sample_rows,
            rows=self.data.rows,
            notes=self.notes,
        )

    def _won_earlier(self, name: str, results: dict[int, dict[str, Trial]], last: int) -> float | None:
        """The speed-up over the rungs where ``name`` and the formula plan both ran, if it won an earlier one.

        Each rung runs the formula plan afresh, so a candidate that beat it by ``MIN_IMPROVEMENT`` in an
        earlier rung as well as in the deciding one has already won a repeat, on other rows; it needs no
        confirmation runs. The speed-up is the formula's total predicted time over the candidate's.
        """
        pairs = [
            (r["formula"].full_s, r[name].full_s)
            for i, r in sorted(results.items())
            if i <= last and "formula" in r and name in r and r["formula"].full_s and r[name].full_s
        ]
        won = [f / c for f, c in pairs if f and c and f / c >= 1 + MIN_IMPROVEMENT]
        if len(pairs) < 2 or len(won) < 2 or pairs[-1][0] / pairs[-1][1] < 1 + MIN_IMPROVEMENT:
            return None
        speedup = sum(f for f, _ in pairs) / sum(c for _, c in pairs)
        if speedup < 1 + MIN_IMPROVEMENT:
            return None
        self.notes.append(
            f"{name} beat the formula plan in {len(won)} of the {len(pairs)} rungs both ran "
            f"({', '.join(f'{w:.2f}×' for w in won)}): taken without further runs"
        )
        return speedup

    def _confirm(self, winner: Trial, formula: Trial, grid: list[Candidate], rung: int) -> tuple[Trial, float]:
        """Run the winner and the formula plan once more each, on the same rows, before trusting the win.

        Short runs on a busy machine carry start-up noise of tens of percent, so one lucky run must not
        replace the formula plan: the challenger has to win the repeat as well, and by MIN_IMPROVEMENT
        over the two runs together. Without time for the repeat the formula plan stays: one run each cannot
        tell a 5 % gain from this machine's noise (the bench's W4 search, cut short by its budget, once took
        ``into_batches(23)`` from single runs on a 750-row sample, and it ran 1.22× slower on all the data).
        """
        base = _faster(formula)
        single = _faster(winner) / base if base else 0.0
        if self.out_of_time(winner.sample_rows, then=CONFIRMATION_RUNS - 1):
            self.notes.append(
                f"{winner.candidate} won its one run ({single:.2f}×) but there was no time left to repeat it: "
                "the formula plan stays"
            )
            return formula, 1.0
        by_name = {c.name: c for c in grid}
        again_winner = self.measure(by_name[winner.candidate], rung, winner.sample_rows)
        again_formula = self.measure(by_name[formula.candidate], rung, winner.sample_rows)
        again_winner.note = again_formula.note = "confirmation"
        # Over both runs of each: the formula's total predicted time over the challenger's.
        challenger = (winner.full_s or math.inf) + (again_winner.full_s or math.inf)
        baseline = (formula.full_s or math.inf) + (again_formula.full_s or math.inf)
        speedup = baseline / challenger if math.isfinite(challenger) and math.isfinite(baseline) else 0.0
        if _faster(again_winner) <= _faster(again_formula) or speedup < 1 + MIN_IMPROVEMENT:
            self.notes.append(
                f"{winner.candidate} won once ({single:.2f}×) but not the repeat ({speedup:.2f}× over both): "
                "the formula plan stays"
            )
            return formula, 1.0
        return winner, speedup


def _describe(p: ScalingPlan) -> str:
    if p.strategy == "shuffle":
        return f"{p.partition_op}({p.partitions}), batch size {p.batch_size}"
    return f"into_batches({p.into_batches}), batch size {p.batch_size}"


def _tuned_plan(
    chosen: ScalingPlan,
    formula: ScalingPlan,
    winner: Trial,
    baseline: Trial,
    candidates: int,
    trials: int,
    speedup: float,
) -> ScalingPlan:
    """The winner's full-data plan with a step (and ``inputs["tuned"]``) saying how it was tuned.

    ``speedup`` is over the runs that decided the win: the deciding rung's and its confirmation repeat,
    or every rung in which both ran when the winner had already won an earlier one.
    """
    how = (
        f"Tuned by daftscale tune: {candidates} candidates around the formula plan ({_describe(formula)}), "
        f"{trials} measured runs with successive halving on samples of up to {winner.sample_rows:,} rows "
        f"(df.limit) of {formula.inputs.get('rows', 0):,}."
    )
    if winner.candidate == "formula":
        verdict = (
            f"No candidate beat the formula plan by {MIN_IMPROVEMENT:.0%} on the {winner.sample_rows:,}-row sample "
            f"(it predicted {baseline.full_s or 0:.1f} s on all the data): the formula plan is kept."
        )
    else:
        verdict = (
            f"The winner, {_describe(chosen)} ({winner.candidate}), predicted {winner.full_s or 0:.1f} s on all the "
            f"data against the formula plan's {baseline.full_s or 0:.1f} s from runs on the {winner.sample_rows:,}-row "
            f"sample: {speedup:.2f}× ({(speedup - 1):+.0%}) over the runs that decided it (a repeat, or earlier rungs)."
        )
    tuned = {
        "from": _describe(formula),
        "candidate": winner.candidate,
        "sample_rows": winner.sample_rows,
        "rows_per_s": winner.rows_per_s,
        "formula_rows_per_s": baseline.rows_per_s,
        "full_s": winner.full_s,
        "formula_full_s": baseline.full_s,
        "speedup": round(speedup, 4),
    }
    return replace(
        chosen,
        reason=f"{chosen.reason} (tuned)",
        inputs={**chosen.inputs, "tuned": tuned},
        steps=(*chosen.steps, how, verdict),
    )


__all__ = [
    "DEFAULT_BUDGET_S",
    "DEFAULT_MULTIPLES",
    "DEFAULT_SAMPLE",
    "Candidate",
    "Rung",
    "SampledPlan",
    "Trial",
    "TuneResult",
    "cache_key",
    "candidate_grid",
    "extrapolated_wall_s",
    "halving_schedule",
    "parse_multiples",
    "sample_partitions",
    "tune",
]
