"""What a search found: each :class:`Trial` and the :class:`TuneResult`, as the tune cache stores them.

Owns the result's rendering (one-line summary, the trials table) and its JSON form; the search that fills
it is :mod:`daftscale.tune_search`. :mod:`daftscale.tune` re-exports both classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from daftscale.errors import ConfigError
from daftscale.plan import ScalingPlan

TUNE_FORMAT_VERSION = 4

# A candidate must beat the formula plan's predicted full-data time by this much on the last rung to replace it:
# run-to-run noise of short runs on a shared machine is several percent.
MIN_IMPROVEMENT = 0.05


def trial_speed(trial: Trial) -> float:
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


__all__ = ["MIN_IMPROVEMENT", "TUNE_FORMAT_VERSION", "Trial", "TuneResult", "trial_speed"]
