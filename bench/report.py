"""results.md and results.png from the results document."""

from __future__ import annotations

from typing import Any


def _mib(size: float) -> str:
    return f"{size / (1 << 20):,.0f}"


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
    lines = [
        "# daftscale benchmark results",
        "",
        f"Cluster {meta.get('cluster', '?')} (local Ray nodes × logical CPUs), {meta['concurrency']} UDF actors for "
        f"every configuration, {meta['repeats']} repeat(s), order interleaved; wall = median over repeats "
        f"(all repeats in `results.json`). `{meta['ideal_formula']}`. daftscale's `prep` (probe, profile, plan, "
        "UDF profiling) is beside its wall time, not in it. `× ideal after start` is (wall − fixed start) / ideal, "
        f"where the fixed start, {_seconds(meta.get('fixed_start_s'))}, is the median wall time of a query with "
        "the same actor pool and next to no work, measured in this run.",
        "",
        "| workload | config | scaling step | UDF batch (mean rows/call) | wall s | predicted s | prep s | tune s "
        "| × ideal | × ideal after start | × best other | × daftscale | ideal s | rows in | rows out "
        "| peak MiB/node | actor util | status |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in sorted(doc["summary"], key=lambda s: (s["workload"], s["config"])):
        status = s["status"] if s["status"] == "ok" else f"**{s['status']}** ({s['failed']}/{s['repeats']})"
        batch = s["batch_size"] if s["batch_size"] is not None else "Daft default"
        lines.append(
            f"| {s['workload']} | {s['config']} | {s['scaling_step']} | {batch} ({s['mean_batch_rows']}) "
            f"| {s['wall_s']:.2f} | {_predicted(s)} | {s['prep_s']:.2f} | {s.get('tune_s') or 0:.1f} "
            f"| {_ratio(s['vs_ideal'])} | {_ratio(s.get('vs_ideal_after_start'))} "
            f"| {s['vs_best_other'] if s['vs_best_other'] is not None else '-'} "
            f"| {s.get('vs_daftscale') if s.get('vs_daftscale') is not None else '-'} | {s['ideal_s']:.2f} "
            f"| {s['rows_in']} | {s['rows_out']} | {_mib(s['peak_memory_bytes'])} | {s['actor_utilization']:.2f} "
            f"| {status} |"
        )
    errors = [s for s in doc["summary"] if s.get("error")]
    if errors:
        lines += ["", "Errors (first per workload × config):", ""]
        lines += [f"- {s['workload']} {s['config']}: {s['error'][:200]}" for s in errors]
    if meta.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in meta["notes"]]
    return "\n".join(lines) + "\n"


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
