"""The bench's run order and its summary table: which run comes when (:func:`schedule`), and one row per
workload × configuration from the repeats' measurements (:func:`summarize`). Pure functions over the rows
the harness (:mod:`bench.harness`) measured.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from bench.predict import judge


def _max_known(values: Iterable[Any]) -> Any:
    """The largest of the figures that were measured; None (unknown) when none was, never 0."""
    known = [v for v in values if v is not None]
    return max(known) if known else None


def _median_known(values: Iterable[Any], *, digits: int) -> float | None:
    """The median of the figures that were measured; None (unknown) when none was, never 0."""
    known = [v for v in values if v is not None]
    return round(statistics.median(known), digits) if known else None


def schedule(workloads: Iterable[str], configs: list[str], repeats: int) -> list[tuple[str, str, int]]:
    """Runs in order: per workload, each repeat runs every config, the order rotated by one each repeat,
    so no config always runs first after a workload change, or always in the same slot.

    >>> schedule(["W1"], ["a", "b", "c"], 2)
    [('W1', 'a', 0), ('W1', 'b', 0), ('W1', 'c', 0), ('W1', 'b', 1), ('W1', 'c', 1), ('W1', 'a', 1)]
    """
    order: list[tuple[str, str, int]] = []
    for name in workloads:
        for r in range(repeats):
            k = r % len(configs)
            rotated = configs[k:] + configs[:k]
            order += [(name, c, r) for c in rotated]
    return order


def summarize(rows: list[dict[str, Any]], fixed_start_s: float | None = None) -> list[dict[str, Any]]:
    """One row per workload × config: the median wall time over repeats (failed repeats excluded),
    worst-case rows and memory, median utilisation; plus ratios to the ideal bound and to the best
    other configuration of the same workload."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["workload"], row["config"]), []).append(row)
    out = []
    for (name, config), runs in groups.items():
        ok = [r for r in runs if r["status"] == "ok"]
        use = ok or runs
        statuses = sorted({r["status"] for r in runs})
        summary = {
            "workload": name,
            "config": config,
            "status": "ok" if len(ok) == len(runs) else ",".join(s for s in statuses if s != "ok"),
            "repeats": len(runs),
            "failed": len(runs) - len(ok),
            "wall_s": round(statistics.median(r["wall_s"] for r in use), 3),
            "wall_s_all": [r["wall_s"] for r in runs],
            "prep_s": round(statistics.median(r.get("prep_s", 0.0) for r in use), 3),
            "ideal_s": runs[0]["ideal_s"],
            "rows_in": runs[0]["rows_in"],
            "rows_out": min(r["rows_out"] for r in runs),
            "rows_out_expected": runs[0].get("rows_out_expected", runs[0]["rows_in"]),
            "query_s": round(statistics.median(r.get("query_s") or r["wall_s"] for r in use), 3),
            # The expert grid's winning point (the first repeat ran the whole grid; later ones the winner).
            "expert_point": runs[0].get("expert_point"),
            "expert_grid": runs[0].get("expert_grid"),
            "peak_memory_bytes": _max_known(r.get("peak_memory_bytes") for r in runs),
            "actor_utilization": _median_known([r.get("actor_utilization") for r in use], digits=4),
            "batch_size": runs[0].get("batch_size"),
            "scaling_step": runs[0].get("scaling_step"),
            "mean_batch_rows": runs[0].get("mean_batch_rows"),
            "first_call_s": round(statistics.median(r.get("first_call_s", 0.0) for r in use), 3),
            "error": next((r["error"] for r in runs if r.get("error")), None),
            # The search runs once (later repeats hit its cache): its full cost is the largest.
            "tune_s": max((r.get("tune_s", 0.0) for r in runs), default=0.0),
            # The simulator's prediction (bench.predict), the same for every repeat; None: not predicted.
            "predicted_wall_s": runs[0].get("predicted_wall_s"),
            "predicted_status": runs[0].get("predicted_status"),
            "prediction_note": runs[0].get("prediction_note"),
            "prediction_basis": runs[0].get("prediction_basis"),  # what it was calibrated on (never this run)
        }
        summary["prediction_error"], summary["prediction_ok"] = judge(
            summary["predicted_wall_s"], summary["predicted_status"], summary["wall_s"], summary["status"]
        )
        summary["vs_ideal"] = round(summary["wall_s"] / summary["ideal_s"], 2) if summary["ideal_s"] else None
        # The same ratio after the fixed start of any query here (Bench.fixed_start: a query with this
        # actor pool and next to no rows); what a configuration adds before its first call still counts.
        if fixed_start_s is not None and summary["ideal_s"]:
            summary["vs_ideal_after_start"] = round((summary["wall_s"] - fixed_start_s) / summary["ideal_s"], 2)
        else:
            summary["vs_ideal_after_start"] = None
        out.append(summary)
    for summary in out:
        # daftscale and daftscale-tuned are compared with what a user has without daftscale, not each other.
        others = [
            o["wall_s"]
            for o in out
            if o["workload"] == summary["workload"]
            and o["config"] != summary["config"]
            and not (summary["config"].startswith("daftscale") and o["config"].startswith("daftscale"))
            and o["status"] == "ok"
        ]
        best = min(others) if others else None
        summary["best_other_s"] = best
        summary["vs_best_other"] = round(summary["wall_s"] / best, 2) if best and summary["status"] == "ok" else None
        plain = next((o for o in out if o["workload"] == summary["workload"] and o["config"] == "daftscale"), None)
        comparable = plain is not None and plain["status"] == "ok" and summary["status"] == "ok"
        summary["vs_daftscale"] = (
            round(summary["wall_s"] / plain["wall_s"], 2)
            if summary["config"] == "daftscale-tuned" and comparable and plain is not None
            else None
        )
    return out
