"""The run report: what a real run measured, as ``report.json``, a self-contained ``report.html`` and PNGs.

:class:`RunReport` holds the figures (the documented report keys plus the raw UDF call intervals that the
simulator and tuner calibrate from), derives utilisation, throughput and the UDF cost fit from the
call records (:mod:`daftscale.report_figures`), and writes everything atomically. Plots use
matplotlib's Agg backend (no display); the HTML embeds them as base64 so it opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from daftscale.errors import RunError
from daftscale.plan_formulas import AGGREGATION_SETTING
from daftscale.report_figures import (
    actor_pools,
    actor_starts,
    actor_utilization,
    fit_udf_cost,
    fit_udf_memory_per_row,
    merged_busy_seconds,
    throughput_curve,
    work_utilization,
)

REPORT_FORMAT_VERSION = 1

# Files a report directory holds; report.json is the one whose presence means "a report is here".
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
TIMELINE_PNG = "timeline.png"
THROUGHPUT_PNG = "throughput.png"
MEMORY_PNG = "memory.png"


# ---------------------------------------------------------------------------------------------------
# Figures derived from UDF call records: daftscale.report_figures


def _span(low: float, high: float) -> str:
    """``"1.2–3.4 s"``, or ``"1.2 s"`` when both round alike."""
    return f"{low:.1f} s" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f} s"


# ---------------------------------------------------------------------------------------------------
# The report


@dataclass
class RunReport:
    """Everything one run measured. Times are seconds; ``udf_calls`` times are relative to run start.

    ``wall_s`` is the query's execution (actor pool start-up included), ``plan_s`` the probe, profile
    and planning before it. ``actor_starts`` has, per UDF actor that built the user's class, its process
    start (``spawned``; Ray may hand an actor a worker process it started earlier) and the class's
    ``__init__`` (``start``, ``end``), relative to run start like ``udf_calls``; ``actor_startup_s`` is
    the last ``__init__``'s end. Daft builds the class on an actor's first batch, so an actor that never
    gets one has no entry, and a late ``__init__`` can mean a late first batch as well as a slow load.
    ``actors`` is the pool size the plan asked Daft for (the plan's concurrency for each of the pipeline's
    models) and ``actors_used`` the actors that got at least one call; utilisation divides by ``actors``,
    so idle actors count.
    """

    runner: str
    nodes: int
    wall_s: float
    rows_in: int
    rows_out: int
    partitions: int
    # None (null, "unknown"): not measured, see measurement_incomplete; never 0 for "not measured".
    batches: int | None
    actors: int
    actor_utilization: float | None
    peak_memory_bytes: int | None
    plan: dict[str, Any]
    udf_calls: list[dict[str, Any]] = field(default_factory=list)
    udf_profile: dict[str, float] | None = None
    node_peak_memory_bytes: dict[str, int | None] = field(default_factory=dict)
    throughput: list[dict[str, float]] = field(default_factory=list)
    stage_span_s: float = 0.0
    cluster: dict[str, Any] = field(default_factory=dict)
    actors_used: int | None = 0
    plan_s: float = 0.0
    rows_per_s: float = 0.0
    pipeline: str = ""
    started_at: str = ""
    # "ok", or why the run stopped early ("stopped: memory budget", "failed: rows lost"): a partial
    # report says so here, so it is never read as a finished run.
    status: str = "ok"
    # Rows whose UDF call raised under on_error "log"/"ignore" (they come out null), and the first errors.
    rows_failed: int | None = 0
    udf_errors: list[str] = field(default_factory=list)
    actor_startup_s: float = 0.0
    actor_starts: list[dict[str, Any]] = field(default_factory=list)
    # Set when the stall watchdog stopped the run (status "failed: stalled"): its limit, the silence that
    # tripped it, and what each actor was doing (in a call since when, on how many rows, or idle).
    stall: dict[str, Any] | None = None
    # Measurement health (daftscale.health): what the run could not measure, one line each ("" when all was).
    measurement_incomplete: list[str] = field(default_factory=list)
    # UDF call records that never reached the driver (at least this many; None: the records were unreadable).
    records_dropped: int | None = 0
    # Memory samples missed per node (a node's peak is then possibly low).
    memory_samples_missed: dict[str, int] = field(default_factory=dict)
    # Whether rows out were checked against rows in (run's check_rows, or the default's verdict).
    rows_checked: bool = False
    # Where the run wrote its rows (path, format, mode, origin, files, rows), or None when it kept none.
    output: dict[str, Any] | None = None
    # Utilisation on per-row work only: busy time less the fitted per-call cost (work_utilization).
    actor_work_utilization: float | None = 0.0
    # Calibration on a sample before the run (part of plan_s), and the whole: probe, profile, calibration,
    # planning and the query, from the start of planning to the query's end (cluster start not included).
    calibration_s: float = 0.0
    total_s: float = 0.0
    # A calibration cost probe's UDF calls that ran out of memory and were run again in halves (rows, error,
    # memory_bytes; daftscale.udf.recorded_call); their halves are in udf_calls. Empty in any other run.
    udf_calls_halved: list[dict[str, Any]] = field(default_factory=list)
    # A first attempt that failed and was run again (a plan made with no sample run that ran out of memory,
    # daftscale.run): its seconds, already counted in total_s. 0 when the first attempt was this run.
    failed_attempt_s: float = 0.0
    version: int = REPORT_FORMAT_VERSION

    @classmethod
    def from_run(
        cls,
        *,
        runner: str,
        cluster: Any,
        plan: Any,
        pipeline: str,
        started_at: float,
        run_start: float,
        end: float,
        rows_in: int,
        rows_out: int,
        partitions: int,
        calls: list[dict[str, Any]],
        node_memory: dict[str, int],
        failed_calls: list[dict[str, Any]] | None = None,
        halved_calls: list[dict[str, Any]] | None = None,
        ready: list[dict[str, Any]] | None = None,
        calibrated: bool = True,
    ) -> RunReport:
        """Build the report from raw measurements (absolute ``time.time()`` stamps in ``calls`` and
        ``ready``, the actors' ``__init__`` records). ``calibrated``: whether this run calibrated the plan; a
        given plan's calibration record is an earlier run's, so its time is not this run's ``calibration_s``."""
        relative = sorted(
            (
                {
                    "actor": str(c["actor"]),
                    "node": str(c["node"]),
                    "start": round(c["start"] - run_start, 6),
                    "end": round(c["end"] - run_start, 6),
                    "rows": int(c["rows"]),
                    # Which model made the call, where there are several: each has its own pool of actors.
                    **({"udf": str(c["udf"])} if c.get("udf") else {}),
                    # The call's peak resident memory above the actor's before it (udf.reset_peak_rss), if measured.
                    **({"memory_bytes": int(c["memory_bytes"])} if c.get("memory_bytes") is not None else {}),
                }
                for c in calls
            ),
            key=lambda c: (c["start"], c["actor"]),
        )
        # Each model has a pool of plan.concurrency actors, all running at once: measured against one pool, two
        # models' calls read as a full pool ("4 of 2" actors used, 100% busy where they were 66%).
        pool = plan.concurrency * actor_pools(plan.inputs, calls)
        utilization, span = actor_utilization(relative, pool)
        wall = max(end - run_start, 0.0)
        failed = sorted(failed_calls or [], key=lambda f: f["start"])
        starts = actor_starts(ready or [], run_start)
        fit = fit_udf_cost(relative)
        calibration = (getattr(plan, "calibration", None) or {}) if calibrated else {}
        return cls(
            runner=runner,
            nodes=cluster.nodes,
            wall_s=round(wall, 4),
            rows_in=rows_in,
            rows_out=rows_out,
            partitions=partitions,
            batches=len(relative),
            actors=pool,
            actor_utilization=round(utilization, 4),
            peak_memory_bytes=max(node_memory.values(), default=0),
            plan=plan.to_dict(),
            udf_calls=relative,
            udf_profile=fit,
            node_peak_memory_bytes=dict(sorted(node_memory.items())),
            throughput=throughput_curve(relative),
            stage_span_s=round(span, 4),
            cluster=cluster.to_dict(),
            actors_used=len({c["actor"] for c in relative}),
            plan_s=round(max(run_start - started_at, 0.0), 4),
            rows_per_s=round(rows_out / wall, 2) if wall > 0 else 0.0,
            pipeline=pipeline,
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started_at)),
            rows_failed=sum(int(f["rows"]) for f in failed),
            # Distinct messages, first ten: enough to see the cause without a row-sized list.
            udf_errors=list(dict.fromkeys(str(f.get("error", "")) for f in failed))[:10],
            actor_startup_s=max((a["end"] for a in starts), default=0.0),
            actor_starts=starts,
            actor_work_utilization=round(
                work_utilization(relative, pool, fit["seconds_per_batch"]) if fit else utilization, 4
            ),
            calibration_s=round(float(calibration.get("elapsed_s") or 0.0), 3),
            total_s=round(max(end - started_at, 0.0), 4),
            udf_calls_halved=[
                {
                    "rows": int(c["rows"]),
                    "error": str(c.get("error", "")),
                    **({"memory_bytes": int(c["memory_bytes"])} if c.get("memory_bytes") is not None else {}),
                }
                for c in sorted(halved_calls or [], key=lambda c: c["start"])
            ],
        )

    # -- serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        if not isinstance(data, dict) or "wall_s" not in data or "udf_calls" not in data:
            raise RunError("not a daftscale run report (no 'wall_s' or 'udf_calls'): make one with 'daftscale run'")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def from_json(cls, text: str) -> RunReport:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise RunError(f"run report is not JSON ({exc.msg} at line {exc.lineno}): pass a report.json") from exc

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> RunReport:
        """Read ``report.json``, or the one inside a report directory."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, REPORT_JSON)
        try:
            with open(path) as handle:
                return cls.from_json(handle.read())
        except OSError as exc:
            raise RunError(f"cannot read run report {path} ({exc.strerror}): pass a report.json") from exc

    def write(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> str:
        """Write report.json, the PNGs and report.html into ``directory``; returns the HTML's path.

        Every file is written to a temporary file beside it and renamed into place, so a reader never
        sees half a report. A directory that already holds a report.json is refused unless ``overwrite``.
        """
        directory = os.fspath(directory)
        if os.path.exists(os.path.join(directory, REPORT_JSON)) and not overwrite:
            raise RunError(f"{directory} already holds a report: pass --overwrite, or choose another directory")
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            raise RunError(f"cannot create report directory {directory} ({exc.strerror}): choose another") from exc
        pngs = render_plots(self)
        for name, data in pngs.items():
            atomic_write(os.path.join(directory, name), data)
        atomic_write(os.path.join(directory, REPORT_HTML), self.to_html(pngs).encode())
        # report.json last: its presence marks a complete report.
        atomic_write(os.path.join(directory, REPORT_JSON), (self.to_json() + "\n").encode())
        return os.path.join(directory, REPORT_HTML)

    # -- rendering ---------------------------------------------------------------------------------

    def _actor_start_text(self) -> str:
        if not self.actor_starts:
            return "not recorded"
        # A spawn time of 0 was clipped: Ray handed the actor a worker process it had started before the run.
        during = [a["spawned"] for a in self.actor_starts if a["spawned"] > 0]
        earlier = len(self.actor_starts) - len(during)
        parts = []
        if during:
            parts.append(f"{len(during)} started at {_span(min(during), max(during))}")
        if earlier:
            parts.append(f"{earlier} reused from before the run")
        built = min(a["start"] for a in self.actor_starts)
        return (
            f"{len(self.actor_starts)} processes ({', '.join(parts)}); "
            f"model built at {_span(built, self.actor_startup_s)} into the run"
        )

    def summary(self) -> list[tuple[str, str]]:
        """The headline figures as (label, value) rows, for the CLI's table and the HTML."""
        from daftscale.health import format_optional_bytes

        plan = self.plan
        decision = plan.get("decision") or {}
        batch_text = f"batch_size {plan.get('batch_size')}"
        if "udf_batch_size" in decision and decision["udf_batch_size"] is None:
            batch_text = "Daft's own batch"  # as ScalingPlan.udf_batch_size reads it
        if decision.get("scaling_step") is False:
            # The plan's partition numbers were not applied: say what ran, and the batch the UDF really got.
            how = "no scaling step (Daft's default)"
        elif plan.get("strategy") == "shuffle":
            how = f"shuffle: {plan.get('partition_op')}({plan.get('partitions')})"
            if self.runner == "native":
                # Daft's native runner ignores partition operations; say so rather than imply it ran.
                how += " (a no-op on the native runner)"
        else:
            how = f"streaming: into_batches({plan.get('into_batches')})"
        settings = plan.get("execution_config") or {}
        if "read_tasks" in (plan.get("levers") or {}) and settings.get("enable_scan_task_split_and_merge"):
            how += f"; small files merged into {settings['scan_tasks_min_size_bytes']:,}-byte read tasks"
        grouped = settings.get(AGGREGATION_SETTING)
        if grouped is not None:
            how += f"; groupby shuffle {grouped} partitions"
        rows = [
            ("runner", f"{self.runner} ({self.nodes} node{'s' if self.nodes != 1 else ''})"),
            ("plan", f"{how}, {batch_text}, {self.actors} actors{self._per_model_text()}"),
            ("wall time", self._wall_text()),
            ("rows in → out", f"{self.rows_in:,} → {self.rows_out:,}"),
            ("throughput", f"{self.rows_per_s:,.0f} rows/s"),
            ("partitions out", f"{self.partitions:,}"),
            ("UDF batches", "unknown" if self.batches is None else f"{self.batches:,} over {self.stage_span_s:.2f} s"),
            ("actors used", f"{'unknown' if self.actors_used is None else self.actors_used} of {self.actors}"),
            ("actor start-up", self._actor_start_text()),
            ("actor utilisation", self._utilization_text()),
            ("peak memory (node)", format_optional_bytes(self.peak_memory_bytes)),
        ]
        if self.output:
            rows.append(("output", f"{self.output['path']} ({self.output['format']}, {self.output['files']:,} files)"))
        else:
            rows.append(("output", "none kept (rows counted, not written)"))
        if self.rows_failed is None:
            rows.append(("rows failed (null)", "unknown"))
        elif self.rows_failed:
            first = self.udf_errors[0] if self.udf_errors else ""
            rows.append(("rows failed (null)", f"{self.rows_failed:,}: {first}"))
        if self.measurement_incomplete:
            rows.insert(0, ("measurement incomplete", "; ".join(self.measurement_incomplete)))
        if self.status != "ok":
            rows.insert(0, ("status", self.status))
        if self.stall:
            busy = [a for a in self.stall.get("actors", []) if a.get("state") == "in a call"]
            idle, limit = self.stall.get("idle_s", 0), self.stall.get("limit_s", 0)
            rows.insert(
                1,
                (
                    "stall",
                    f"{idle:.0f} s without progress (limit {limit:.0f} s); "
                    f"{len(busy)} of {self.stall.get('actors_reported', 0)} reporting actors in a call "
                    f"({self.stall.get('actors_planned', 0)} planned)",
                ),
            )
        decision = plan.get("decision")
        if decision:
            verdict = "scaling step" if decision.get("scaling_step", True) else "no scaling step (Daft's default)"
            rows.append(("decision", f"{verdict}: {decision.get('why', '')}"))
        calibration = plan.get("calibration")
        if calibration:
            rows.append(("calibration", "; ".join(calibration.get("lines") or [])))
        warnings = plan.get("warnings") or []
        if warnings:
            rows.append(("plan warnings", "; ".join(f"{w.get('code', '')}: {w.get('message', '')}" for w in warnings)))
        if self.udf_profile:
            rows.append(
                (
                    "UDF cost (fit)",
                    f"{self.udf_profile['seconds_per_batch'] * 1e3:.1f} ms/call + "
                    f"{self.udf_profile['seconds_per_row'] * 1e3:.3f} ms/row",
                )
            )
        return rows

    def _wall_text(self) -> str:
        text = f"{self.wall_s:.2f} s (+ {self.plan_s:.2f} s to probe and plan"
        if self.calibration_s:
            text += f", {self.calibration_s:.2f} s of it calibrating on a sample"
        total = self.total_s or self.wall_s + self.plan_s
        text += f"; {total:.2f} s in all"
        if self.failed_attempt_s:
            text += f", {self.failed_attempt_s:.2f} s of it in a first attempt that failed"
        return text + ")"

    def _per_model_text(self) -> str:
        """`` (2 for each of 2 models)`` where the pool is several models' pools, else nothing."""
        pools = actor_pools(self.plan.get("inputs") or {}, self.udf_calls)
        return f" ({self.actors // pools} for each of {pools} models)" if pools > 1 else ""

    def _utilization_text(self) -> str:
        if self.actor_utilization is None:
            return "unknown"
        text = f"{self.actor_utilization:.0%} busy"
        work = self.actor_work_utilization
        if self.udf_profile and work is not None and work < self.actor_utilization:
            text += (
                f", {work:.0%} on per-row work (the rest is the "
                f"{self.udf_profile['seconds_per_batch'] * 1e3:.1f} ms per-call cost)"
            )
        return text

    def summary_table(self) -> Any:
        """The summary as a ``rich.table.Table``."""
        from rich.table import Table

        table = Table(title="daftscale run", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for label, value in self.summary():
            table.add_row(label, value)
        return table

    def explain(self) -> str:
        """The plan's explain() text, rebuilt from the plan JSON."""
        from daftscale.plan import ScalingPlan

        try:
            return ScalingPlan.from_dict(self.plan).explain()
        except Exception:
            return json.dumps(self.plan, indent=2)

    def to_html(self, pngs: dict[str, bytes] | None = None) -> str:
        """A self-contained HTML page: summary, plots (embedded PNGs), node memory, the plan's explanation."""
        from daftscale.health import format_optional_bytes

        pngs = render_plots(self) if pngs is None else pngs

        def img(name: str, alt: str) -> str:
            if name not in pngs:
                return f"<p class='note'>No {html.escape(alt)}: the run recorded no UDF calls.</p>"
            data = base64.b64encode(pngs[name]).decode()
            return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{data}'>"

        summary_rows = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in self.summary()
        )
        memory_rows = "".join(
            f"<tr><th>{html.escape(node)}</th><td>{html.escape(format_optional_bytes(b))}</td></tr>"
            for node, b in self.node_peak_memory_bytes.items()
        )
        warnings = self.plan.get("warnings") or []
        warning_items = "".join(
            f"<li><code>{html.escape(w.get('code', ''))}</code> {html.escape(w.get('message', ''))}</li>"
            for w in warnings
        )
        title = f"daftscale run report — {os.path.basename(self.pipeline) or 'pipeline'}"
        utilisation = "unknown" if self.actor_utilization is None else f"{self.actor_utilization:.0%}"
        return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; }} th, td {{ text-align: left; padding: 0.2em 1em 0.2em 0; }}
th {{ font-weight: 600; }} img {{ max-width: 100%; border: 1px solid #eee; }}
pre {{ background: #f6f6f6; padding: 1em; white-space: pre-wrap; font-size: 0.85em; }}
.note {{ color: #666; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="note">{html.escape(self.started_at)} · {html.escape(self.pipeline)}</p>
<h2>Summary</h2>
<table>{summary_rows}</table>
<h2>Actor timeline</h2>
<p class="note">Each bar is one UDF call (a batch) on one actor; gaps are idle time. Utilisation
{utilisation} = busy time / ({self.actors} actors × {self.stage_span_s:.2f} s UDF stage).</p>
{img(TIMELINE_PNG, "actor timeline")}
<h2>Throughput</h2>
{img(THROUGHPUT_PNG, "throughput over time")}
<h2>Peak resident memory per node</h2>
<table>{memory_rows}</table>
{img(MEMORY_PNG, "peak memory per node")}
<h2>Plan</h2>
{f"<ul>{warning_items}</ul>" if warning_items else ""}
<pre>{html.escape(self.explain())}</pre>
</body></html>
"""


# ---------------------------------------------------------------------------------------------------
# Plots


def render_plots(report: RunReport) -> dict[str, bytes]:
    """PNG bytes by file name: the actor timeline, throughput and memory (those with data)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs: dict[str, bytes] = {}
    calls = report.udf_calls
    if calls:
        pngs[TIMELINE_PNG] = _png(plt, _timeline(plt, report))
        pngs[THROUGHPUT_PNG] = _png(plt, _throughput(plt, report))
    if any(v is not None for v in report.node_peak_memory_bytes.values()):
        pngs[MEMORY_PNG] = _png(plt, _memory(plt, report))
    return pngs


def _png(plt: Any, fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _timeline(plt: Any, report: RunReport) -> Any:
    calls = report.udf_calls
    actors = sorted({(c["node"], c["actor"]) for c in calls})
    nodes = sorted({node for node, _ in actors})
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(actors) + 1.6))
    for row, (node, actor) in enumerate(actors):
        bars = [(c["start"], c["end"] - c["start"]) for c in calls if c["actor"] == actor and c["node"] == node]
        ax.broken_barh(bars, (row - 0.4, 0.8), facecolors=colours(nodes.index(node) % 10), edgecolor="white")
    ax.set_yticks(range(len(actors)))
    ax.set_yticklabels([f"node {node} · actor {actor}" for node, actor in actors])
    # Zoom on the UDF stage: on Ray the actor pool's start-up can take most of the wall time, and a
    # 0..wall axis would squash the calls into a sliver at the right.
    first, last = min(c["start"] for c in calls), max(c["end"] for c in calls)
    pad = max((last - first) * 0.03, 0.01)
    ax.set_xlim(max(0.0, first - pad), last + pad)
    ax.set_xlabel(
        f"seconds since the run started (UDF stage {first:.2f}–{last:.2f} s; before it: scan and actor start-up)"
    )
    ax.invert_yaxis()
    ax.set_title(
        f"UDF calls per actor — {len(calls)} batches, utilisation {report.actor_utilization:.0%} "
        f"({report.actors_used} of {report.actors} actors used)"
    )
    ax.grid(axis="x", alpha=0.3)
    return fig


def _throughput(plt: Any, report: RunReport) -> Any:
    points = report.throughput
    fig, ax = plt.subplots(figsize=(11, 3.6))
    ax.step([p["t"] for p in points], [p["rows"] for p in points], where="post", color="tab:blue")
    first = min((c["start"] for c in report.udf_calls), default=0.0)
    if first > 0:
        # Labelled in the legend, not on the plot: a short span would put the text over the y-axis.
        ax.axvspan(0, first, color="0.9", label="before the first UDF call: scan, actor pool start-up")
        ax.legend(loc="upper left", fontsize=8)
    ax.set_xlabel("seconds since the run started")
    ax.set_ylabel("rows through the UDF (cumulative)")
    ax.set_xlim(0, max(report.wall_s, points[-1]["t"]) * 1.02)
    ax.set_title(f"Throughput — {report.rows_out:,} rows in {report.wall_s:.2f} s ({report.rows_per_s:,.0f} rows/s)")
    ax.grid(alpha=0.3)
    return fig


def _memory(plt: Any, report: RunReport) -> Any:
    # A node whose peak is unknown is left out of the bars (the table above says "unknown").
    nodes = [n for n, v in report.node_peak_memory_bytes.items() if v is not None]
    values = [(report.node_peak_memory_bytes[n] or 0) / 2**20 for n in nodes]
    fig, ax = plt.subplots(figsize=(11, 0.4 * len(nodes) + 1.4))
    ax.barh(nodes, values, color="tab:orange")
    ax.set_xlabel("peak resident memory (MiB, summed over the node's Ray/Daft processes)")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    return fig


# ---------------------------------------------------------------------------------------------------
# Files


def atomic_write(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and ``os.replace``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


__all__ = [
    "MEMORY_PNG",
    "REPORT_FORMAT_VERSION",
    "REPORT_HTML",
    "REPORT_JSON",
    "THROUGHPUT_PNG",
    "TIMELINE_PNG",
    "RunReport",
    "actor_pools",
    "actor_starts",
    "actor_utilization",
    "atomic_write",
    "fit_udf_cost",
    "fit_udf_memory_per_row",
    "merged_busy_seconds",
    "render_plots",
    "throughput_curve",
    "work_utilization",
]
