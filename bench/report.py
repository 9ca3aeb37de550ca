"""results.md and results.png from the results document, and the targets daftscale is held to.

The targets, per workload, for the ``daftscale`` configuration (``daftscale run`` with nothing beyond the
cluster; its wall time is the whole command):

- ``vs_daft_default = daftscale wall / daft-default wall ≤ 1.0`` (met when daft-default failed and daftscale
  did not);
- ``vs_best_peer = daftscale wall / the fastest peer's wall ≤ 1.05``, the peers being every configuration a
  user has without daftscale (``bench.harness.PEERS``: Daft default, seed recipe, dynamic batching, both
  Ray Data rows, the expert grid's best); met when no peer finished;
- ``vs_ideal_after_start = (daftscale wall − fixed start) / ideal ≤ 1.3``.

A daftscale run that failed, or lost rows, meets none. A target whose comparison did not run (a peer left
out with ``--configs``, no fixed start measured) is "n/a", and the workload's ``passed`` is then false.
"""

from __future__ import annotations

from typing import Any

# (key, bound, what it compares): the targets for daftscale's default path.
TARGETS = (
    ("vs_daft_default", 1.0, "× Daft default"),
    ("vs_best_peer", 1.05, "× best peer"),
    ("vs_ideal_after_start", 1.3, "× ideal after start"),
)


def targets(summary: list[dict[str, Any]], fixed_start_s: float | None, peers: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per workload with a ``daftscale`` summary: the three ratios and whether each target is met.

    >>> rows = [
    ...     {"workload": "W", "config": "daftscale", "status": "ok", "wall_s": 10.0, "ideal_s": 5.0,
    ...      "rows_out": 4, "rows_out_expected": 4},
    ...     {"workload": "W", "config": "daft-default", "status": "ok", "wall_s": 20.0},
    ...     {"workload": "W", "config": "expert", "status": "ok", "wall_s": 9.8, "expert_point": "none, B=256"},
    ... ]
    >>> t = targets(rows, 4.0, ("daft-default", "expert"))[0]
    >>> t["vs_daft_default"], t["vs_best_peer"], t["best_peer"], t["vs_ideal_after_start"], t["passed"]
    (0.5, 1.02, 'expert (none, B=256)', 1.2, True)
    """
    out = []
    for mine in (s for s in summary if s["config"] == "daftscale"):
        same = {s["config"]: s for s in summary if s["workload"] == mine["workload"]}
        ok = mine["status"] == "ok" and mine.get("rows_out") == mine.get("rows_out_expected", mine.get("rows_out"))
        row: dict[str, Any] = {"workload": mine["workload"], "daftscale_s": mine["wall_s"], "daftscale_ok": ok}
        default = same.get("daft-default")
        finished = [same[c] for c in peers if c in same and same[c]["status"] == "ok"]
        best = min(finished, key=lambda s: s["wall_s"]) if finished else None
        row["daft_default_s"] = default["wall_s"] if default and default["status"] == "ok" else None
        row["best_peer"] = None
        if best is not None:
            point = best.get("expert_point")
            row["best_peer"] = best["config"] + (f" ({point})" if point else "")
        row["best_peer_s"] = best["wall_s"] if best else None
        # A failed daftscale run's time (how long it took to fail) is no result: no ratio, every target failed.
        row["vs_daft_default"] = _div(mine["wall_s"], row["daft_default_s"]) if ok else None
        row["vs_best_peer"] = _div(mine["wall_s"], row["best_peer_s"]) if ok else None
        ideal = mine.get("ideal_s")
        row["fixed_start_s"] = fixed_start_s
        row["vs_ideal_after_start"] = (
            round((mine["wall_s"] - fixed_start_s) / ideal, 2) if ok and fixed_start_s is not None and ideal else None
        )
        ran = {"vs_daft_default": default is not None, "vs_best_peer": any(c in same for c in peers)}
        for key, bound, _ in TARGETS:
            value = row[key]
            met: bool | None
            if not ok:
                met = False
            elif value is not None:
                met = value <= bound
            elif key == "vs_ideal_after_start" or not ran[key]:
                met = None  # not judged: the comparison was not run (--configs) or no fixed start was measured
            else:
                met = True  # the peers ran and failed (W4's out-of-memory): finishing beats them
            row[f"{key}_met"] = met
        verdicts = [row[f"{key}_met"] for key, _, _ in TARGETS]
        row["passed"] = False not in verdicts and None not in verdicts
        out.append(row)
    return sorted(out, key=lambda r: r["workload"])


def _div(a: float, b: float | None) -> float | None:
    return round(a / b, 2) if b else None


def _mib(size: float | None) -> str:
    return "unknown" if size is None else f"{size / (1 << 20):,.0f}"


def _share(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


# What a prediction was calibrated on, as its cell says it (bench.predict's prediction_basis): never the
# predicted run itself.
_BASIS_SHORT = {
    "calibration: daftscale run": "from daftscale run",
    "calibration: daftscale-tuned run": "from tuned run",
    "profile": "from profile",
}


def _predicted(s: dict[str, Any]) -> str:
    """Predicted wall time, its error and what it was calibrated on, e.g. ``9.10 (+12%, from daftscale run)``;
    ``-`` where not predicted."""
    basis = _BASIS_SHORT.get(s.get("prediction_basis") or "", "")
    if s.get("predicted_status") == "oom":
        return f"oom ({basis})" if basis else "oom"
    if s.get("predicted_wall_s") is None:
        return "-"
    error = s.get("prediction_error")
    parts = [f"{error:+.0%}"] if error is not None else []
    parts += [basis] if basis else []
    return f"{s['predicted_wall_s']:.2f}" + (f" ({', '.join(parts)})" if parts else "")


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f} s"


def render_markdown(doc: dict[str, Any]) -> str:
    meta = doc["meta"]
    # W7 runs with its own actor pool (one per real core): say so beside the bench's concurrency.
    own = {n: w["concurrency"] for n, w in meta.get("workloads", {}).items() if w.get("concurrency")}
    pools = "".join(f"; {n}: {c}" for n, c in sorted(own.items()))
    lines = [
        "# daftscale benchmark results",
        "",
        f"Cluster {meta.get('cluster', '?')} (local Ray nodes × logical CPUs), {meta['concurrency']} UDF actors for "
        f"every configuration{pools}, {meta['repeats']} repeat(s), order interleaved; wall = median over repeats "
        f"(all repeats in `results.json`). `{meta['ideal_formula']}`. daftscale's wall time is the whole "
        "`daftscale run` (probe, profiling, calibration, planning and query); its `prep` is the part before the "
        "query, already inside the wall time. `× ideal after start` is (wall − fixed start) / ideal, "
        f"where the fixed start, {_seconds(meta.get('fixed_start_s'))}, is the median wall time of a query with "
        "the same actor pool and next to no work, measured in this run.",
        "",
        "| workload | config | scaling step | UDF batch (mean rows/call) | wall s | predicted s | prep s | tune s "
        "| × ideal | × ideal after start | × best other | × daftscale | ideal s | rows in | rows out/expected "
        "| peak MiB/node | actor util | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in sorted(doc["summary"], key=lambda s: (s["workload"], s["config"])):
        status = s["status"] if s["status"] == "ok" else f"**{s['status']}** ({s['failed']}/{s['repeats']})"
        batch = s["batch_size"] if s["batch_size"] is not None else "Daft default"
        step = s["scaling_step"]
        rows_out = f"{s['rows_out']}/{s.get('rows_out_expected', s['rows_in'])}"
        lines.append(
            f"| {s['workload']} | {s['config']} | {step} | {batch} ({s['mean_batch_rows']}) "
            f"| {s['wall_s']:.2f} | {_predicted(s)} | {s['prep_s']:.2f} | {s.get('tune_s') or 0:.1f} "
            f"| {_ratio(s['vs_ideal'])} | {_ratio(s.get('vs_ideal_after_start'))} "
            f"| {s['vs_best_other'] if s['vs_best_other'] is not None else '-'} "
            f"| {s.get('vs_daftscale') if s.get('vs_daftscale') is not None else '-'} | {s['ideal_s']:.2f} "
            f"| {s['rows_in']} | {rows_out} | {_mib(s['peak_memory_bytes'])} | {_share(s['actor_utilization'])} "
            f"| {status} |"
        )
    if doc.get("targets"):
        lines += ["", *render_targets(doc["targets"])]
    grids = [s for s in doc["summary"] if s.get("expert_grid")]
    if grids:
        lines += ["", "Expert grid (first repeat; the winner ran again in later repeats):", ""]
        for s in sorted(grids, key=lambda s: s["workload"]):
            points = "; ".join(
                f"{g['point']}: {g['wall_s']:.2f} s" + ("" if g["status"] == "ok" else f" ({g['status']})")
                for g in s["expert_grid"]
            )
            lines.append(f"- {s['workload']}: {points}")
    errors = [s for s in doc["summary"] if s.get("error")]
    if errors:
        lines += ["", "Errors (first per workload × config):", ""]
        lines += [f"- {s['workload']} {s['config']}: {s['error'][:200]}" for s in errors]
    if meta.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


def render_targets(rows: list[dict[str, Any]]) -> list[str]:
    """The targets table: daftscale's three ratios per workload and pass/fail for each."""

    def cell(row: dict[str, Any], key: str) -> str:
        value = row[key]
        verdict = {True: "pass", False: "**FAIL**", None: "n/a"}[row[f"{key}_met"]]
        return f"{'-' if value is None else f'{value:.2f}'} {verdict}"

    bounds = ", ".join(f"{label} ≤ {bound}" for _, bound, label in TARGETS)
    lines = [
        f"Targets for `daftscale` (wall time of the whole `daftscale run`): {bounds}.",
        "",
        "| workload | daftscale s | Daft default s | best peer | best peer s | × Daft default (≤ 1.0) "
        "| × best peer (≤ 1.05) | × ideal after start (≤ 1.3) | all |",
        "|---|---:|---:|---|---:|---|---|---|---|",
    ]
    for r in rows:
        verdicts = [r[f"{key}_met"] for key, _, _ in TARGETS]
        seconds = "-" if r["daft_default_s"] is None else f"{r['daft_default_s']:.2f}"
        peer_s = "-" if r["best_peer_s"] is None else f"{r['best_peer_s']:.2f}"
        mine = f"{r['daftscale_s']:.2f}" + ("" if r["daftscale_ok"] else " (failed)")
        lines.append(
            f"| {r['workload']} | {mine} | {seconds} | {r['best_peer'] or '-'} | {peer_s} "
            f"| {cell(r, 'vs_daft_default')} | {cell(r, 'vs_best_peer')} | {cell(r, 'vs_ideal_after_start')} "
            f"| {'pass' if r['passed'] else ('**FAIL**' if False in verdicts else 'n/a')} |"
        )
    return lines


def render_plot(doc: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = doc["summary"]
    workloads = sorted({s["workload"] for s in summary})
    configs = [c for c in doc["meta"]["configs"] if any(s["config"] == c for s in summary)]
    fig, axes = plt.subplots(1, len(workloads), figsize=(4.2 * len(workloads), 4.2), squeeze=False)
    for ax, name in zip(axes[0], workloads, strict=True):
        rows = {s["config"]: s for s in summary if s["workload"] == name}
        values = [rows[c]["wall_s"] if c in rows else 0 for c in configs]
        colors = [
            "#c0392b"
            if c in rows and rows[c]["status"] != "ok"
            else ("#2e86de" if c.startswith("daftscale") else "#95a5a6")
            for c in configs
        ]
        ax.bar(range(len(configs)), values, color=colors)
        ideal = next(iter(rows.values()))["ideal_s"]
        ax.axhline(ideal, color="black", linestyle="--", linewidth=1, label=f"ideal {ideal:.1f}s")
        for i, c in enumerate(configs):
            if c in rows and rows[c]["status"] != "ok":
                ax.text(i, values[i], rows[c]["status"], ha="center", va="bottom", fontsize=8, color="#c0392b")
        ax.set_xticks(range(len(configs)))
        ax.set_xticklabels(configs, rotation=35, ha="right", fontsize=8)
        ax.set_title(name)
        ax.set_ylabel("wall s (median)")
        ax.legend(fontsize=8)
    fig.suptitle("Wall time per configuration (red: failed, e.g. out of the memory budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
