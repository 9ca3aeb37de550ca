"""The tuner's pure parts: the candidate grid, the successive-halving schedule, sampling arithmetic and the
full-data time a sample run predicts.

No I/O: :mod:`daftscale.tune_search` runs what these functions lay out; :mod:`daftscale.tune` re-exports them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from daftscale.errors import ConfigError

# Multiples of the formula's numbers tried each way: two octaves either side covers the error of the
# formulas' assumptions (K = 4 batches per task, a guessed per-call cost) without a wide grid.
DEFAULT_MULTIPLES: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

# Successive halving keeps 1/eta of each rung and grows the sample eta times: 2 halves, the most
# forgiving of noisy small-sample measurements.
DEFAULT_ETA = 2


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


def fraction_label(m: float) -> str:
    """``×¼``-style labels for the multiples.

    >>> [fraction_label(m) for m in (0.25, 0.5, 1.0, 2.0, 3.0)]
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
        out.append(Candidate(f"B×{fraction_label(bm)} {'P' if p else 'T'}×{fraction_label(tm)}", b, p, ib, bm, tm))
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


__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_MULTIPLES",
    "Candidate",
    "Rung",
    "candidate_grid",
    "extrapolated_wall_s",
    "fraction_label",
    "halving_schedule",
    "parse_multiples",
    "sample_partitions",
]
