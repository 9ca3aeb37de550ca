"""``predicted_wall_s``: the simulator, calibrated from one run of a workload, predicts the others.

Per workload, :func:`daftscale.simulate.costs_from_report` fits the costs from the ``daftscale`` run's
report (the first repeat's); every Daft configuration of the workload is then written as a
:class:`~daftscale.plan.ScalingPlan` on the same cluster (``dataclasses.replace`` on that run's plan) and
simulated with those costs:

- ``daftscale`` / ``daftscale-tuned``: the plan each ran, as its report records it;
- ``seed-recipe``: light data ``repartition(100)``, heavy data ``into_batches(64)``; UDF batch 64;
- ``daft-default``: no scaling step: one task per scan task (one per input file); Daft's default UDF
  batch is the whole morsel it is handed, taken as the mean rows per call the run measured (a property
  of Daft, not a timing);
- ``daft-dynamic-batching``: approximated as ``daft-default`` (its morsel-size search is not modelled);
- ``ray-data``: not predicted (another engine): ``None``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

SEED_PARTITIONS = 100
SEED_BATCH = 64

# At most this much of a task's time beyond its UDF calls is per task (Ray scheduling, plan
# serialisation); the rest is fitted per row (daftscale.simulate.DEFAULT_TASK_OVERHEAD_S).
RAY_TASK_OVERHEAD_S = 0.05

NOTES = {
    "daft-dynamic-batching": "approximated as daft-default: the morsel-size search is not modelled",
    "ray-data": "not predicted: another engine",
}


def config_plan(config: str, base: Any, *, kind: str, files: int, rows: int, mean_batch_rows: float | None) -> Any:
    """The plan a baseline configuration amounts to, on ``base``'s cluster and inputs; None if none."""
    common = {"partition_keys": (), "partition_bytes_target": None, "predicted": None}
    if config == "seed-recipe":
        if kind == "light":
            return replace(
                base,
                strategy="shuffle",
                partitions=SEED_PARTITIONS,
                partition_op="repartition",
                into_batches=None,
                batch_size=SEED_BATCH,
                **common,
            )
        return replace(
            base,
            strategy="streaming",
            partitions=None,
            partition_op=None,
            into_batches=SEED_BATCH,
            batch_size=SEED_BATCH,
            **common,
        )
    if config in ("daft-default", "daft-dynamic-batching"):
        per_task = math.ceil(rows / max(1, files))
        batch = round(mean_batch_rows) if mean_batch_rows else per_task
        return replace(
            base,
            strategy="streaming",
            partitions=None,
            partition_op=None,
            into_batches=None,
            batch_size=max(1, min(batch, per_task)),
            **common,
        )
    return None


def attach(rows: list[dict[str, Any]], predictions: dict[str, dict[str, Any]]) -> None:
    """Write ``predicted_wall_s`` and ``prediction_error`` (predicted / measured − 1) into each row."""
    for row in rows:
        found = predictions.get(row["config"], {"predicted_wall_s": None, "prediction_note": None})
        row.update(found)
        predicted, wall = found["predicted_wall_s"], row.get("wall_s")
        row["prediction_error"] = round(predicted / wall - 1, 3) if predicted is not None and wall else None


def predict_workload(
    reports: dict[str, dict[str, Any]], rows: list[dict[str, Any]], *, kind: str, file_rows: list[int]
) -> dict[str, dict[str, Any]]:
    """``{config: {"predicted_wall_s", "prediction_note"}}`` for the configurations in ``rows``, all
    predicted with costs calibrated from ``reports["daftscale"]`` (the daftscale run's report dict);
    ``reports`` holds the first report of each daftscale configuration; ``file_rows`` the rows of each
    input file (tasks without a shuffle follow the files)."""
    from daftscale.simulate import costs_from_report, plan_from_report, simulate

    report = reports["daftscale"]
    # Ray's own cost per task is tens of milliseconds; what the report's tasks took beyond that is
    # reading and the per-row read UDF, which scale with the rows a task gets.
    costs = costs_from_report(report, max_task_overhead_s=RAY_TASK_OVERHEAD_S)
    base, cluster = plan_from_report(report)
    inputs = {**base.inputs, "files": len(file_rows), "file_rows": list(file_rows)}
    base = replace(base, inputs=inputs)
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        config = row["config"]
        if config in out:
            continue
        note = NOTES.get(config)
        plan = None
        if config in ("daftscale", "daftscale-tuned"):
            own = reports.get(config)
            if own is not None:
                plan, _ = plan_from_report(own)
                plan = replace(plan, inputs={**plan.inputs, "files": len(file_rows), "file_rows": list(file_rows)})
            else:
                note = "not predicted: the run left no report"
        elif config != "ray-data":
            rows_in = int(base.inputs["rows"])
            batch = row.get("mean_batch_rows")
            plan = config_plan(config, base, kind=kind, files=len(file_rows), rows=rows_in, mean_batch_rows=batch)
        if plan is None:
            out[config] = {"predicted_wall_s": None, "prediction_note": note}
            continue
        result = simulate(plan, cluster, costs=costs)
        out[config] = {"predicted_wall_s": round(result.makespan_s, 3), "prediction_note": note}
    return out
