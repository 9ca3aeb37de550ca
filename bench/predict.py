"""``predicted_wall_s``: the simulator predicts each configuration from what was known before it ran.

Honest by construction: no configuration is predicted from a measurement of its own run. The sources, in
``prediction_basis`` beside every prediction:

- ``calibration: daftscale run`` for every baseline configuration: the costs
  :func:`daftscale.simulate.costs_from_report` fits from the ``daftscale`` run's report (the first
  repeat's), a run of another configuration (its fragments, ``Costs.delivered_rows_per_call``, included:
  they come from the input, which every configuration reads);
- ``daftscale`` itself: calibrated from the ``daftscale-tuned`` run when that ran another plan
  (``calibration: daftscale-tuned run``), and ``daftscale-tuned`` from the ``daftscale`` run only when
  their plans differ; a plan with no other plan's run to learn from is predicted from the UDF profile it
  was made with and the simulator's defaults (``profile``), else not predicted.

Every configuration is written as a :class:`~daftscale.plan.ScalingPlan` on the same cluster
(``dataclasses.replace`` on the calibration run's plan, so the UDF's declared memory and its profiled
memory per row come along) and simulated with those costs.
A configuration the simulator calls out of memory (a node over Ray's threshold, or one UDF batch over
the actor's declared memory) is predicted as ``predicted_status`` ``"oom"`` with no wall time; one
that fits as ``"ok"`` with ``predicted_wall_s``. The configurations:

- ``daftscale`` / ``daftscale-tuned``: the plan each ran, as its report records it;
- ``seed-recipe``: light data ``repartition(100)``, heavy data ``into_batches(64)``; UDF batch 64;
- ``daft-default``: no scaling step: one task per scan task (one per input file); Daft's default UDF
  batch is the whole morsel it is handed, a Parquet row group: ``row_group_rows`` when the caller knows
  the files' row groups (known before the run), else the task's rows;
- ``daft-dynamic-batching``: as ``daft-default`` (its morsel-size search is not modelled; the batch
  sizes it settled on in its own run are not used);
- ``ray-data``: not predicted (another engine): ``None``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from bench.configs import SEED_BATCH, SEED_PARTITIONS

# Per-task cost charged at most when it is fitted from the UDF stage's span (reports without the measured
# actor-pool start): that fit lands on the threshold where the tasks would starve the actors, not on what
# they did, so it is bounded by Ray's typical per-task cost (daftscale.simulate.DEFAULT_TASK_OVERHEAD_S).
# A report with the pool's start measures it instead.
RAY_TASK_OVERHEAD_S = 0.05

# The fidelity target: predicted wall time within this share of the measured one.
FIDELITY_TARGET = 0.20

NOTES = {
    "daft-dynamic-batching": "approximated as daft-default: the morsel-size search is not modelled",
    "ray-data": "not predicted: another engine",
}

# Where a prediction's costs came from (``prediction_basis``); never the predicted run itself.
BASIS_DAFTSCALE = "calibration: daftscale run"
BASIS_TUNED = "calibration: daftscale-tuned run"
BASIS_PROFILE = "profile"


def config_plan(
    config: str,
    base: Any,
    *,
    kind: str,
    files: int,
    rows: int,
    mean_batch_rows: float | None,
    row_group_rows: int | None = None,
) -> Any:
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
        if config == "daft-default" and row_group_rows:
            # A task smaller than a row group sends its own rows: the simulator cuts each file's task.
            batch = per_task = min(int(row_group_rows), rows)
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


def judge(
    predicted_wall_s: float | None, predicted_status: str | None, wall_s: float | None, status: str | None
) -> tuple[float | None, bool | None]:
    """``(prediction_error, prediction_ok)`` of one prediction against what ran.

    The error is predicted / measured − 1 where both ran to the end. The prediction is right when its
    status is (a predicted OOM of a run that ran out of memory), and for a finished run when the error is
    within ``FIDELITY_TARGET``; None when nothing was predicted or the run failed for another reason.

    >>> judge(11.0, "ok", 10.0, "ok"), judge(13.0, "ok", 10.0, "ok"), judge(None, "oom", 5.0, "oom")
    ((0.1, True), (0.3, False), (None, True))
    """
    ran = status == "ok"
    error = round(predicted_wall_s / wall_s - 1, 3) if predicted_wall_s is not None and wall_s and ran else None
    if predicted_status is None:
        return error, None
    if predicted_status == "oom" or status == "oom":
        return error, predicted_status == status
    if ran:
        return error, error is not None and abs(error) <= FIDELITY_TARGET
    return error, None  # the run failed for another reason: nothing to compare


def attach(rows: list[dict[str, Any]], predictions: dict[str, dict[str, Any]]) -> None:
    """Write the prediction into each row: ``predicted_wall_s``, ``predicted_status`` (``ok`` / ``oom``),
    ``prediction_note``, and :func:`judge`'s ``prediction_error`` and ``prediction_ok``."""
    for row in rows:
        found = predictions.get(
            row["config"],
            {"predicted_wall_s": None, "predicted_status": None, "prediction_note": None, "prediction_basis": None},
        )
        row.update(found)
        row["prediction_error"], row["prediction_ok"] = judge(
            found["predicted_wall_s"], found.get("predicted_status"), row.get("wall_s"), row.get("status")
        )


def predict_workload(
    reports: dict[str, dict[str, Any]],
    rows: list[dict[str, Any]],
    *,
    kind: str,
    file_rows: list[int],
    row_group_rows: int | None = None,
    pre_udf_seconds_per_row: float | None = None,
) -> dict[str, dict[str, Any]]:
    """``{config: {"predicted_wall_s", "predicted_status", "prediction_note"}}`` for the configurations in
    ``rows``, all predicted with costs calibrated from ``reports["daftscale"]`` (the daftscale run's report dict);
    ``reports`` holds the first report of each daftscale configuration; no configuration is predicted from
    its own run (see the module docstring; ``prediction_basis`` says which source each used); ``file_rows``
    the rows of each
    input file (tasks without a shuffle follow the files); ``row_group_rows`` the rows per Parquet row group
    of the input files, when known (a scan's morsels, and so Daft's default UDF batch);
    ``pre_udf_seconds_per_row`` a profile of the work the tasks do per row before the UDF (W1's read), which
    a run report cannot show (see ``costs_from_report``)."""
    from daftscale.simulate import Costs, plan_from_report, simulate

    report = reports["daftscale"]
    fitted = {"daftscale": _fit(report, pre_udf_seconds_per_row)}
    base, cluster = plan_from_report(report)
    files = {"files": len(file_rows), "file_rows": list(file_rows)}
    base = replace(base, inputs={**base.inputs, **files})
    out: dict[str, dict[str, Any]] = {}
    for row in rows:
        config = row["config"]
        if config in out:
            continue
        note = NOTES.get(config)
        plan = None
        costs, basis = fitted["daftscale"], BASIS_DAFTSCALE
        if config in ("daftscale", "daftscale-tuned"):
            own = reports.get(config)
            if own is not None:
                plan, _ = plan_from_report(own)
                plan = replace(plan, inputs={**plan.inputs, **files})
            else:
                note = "not predicted: the run left no report"
        elif config != "ray-data":
            plan = config_plan(
                config,
                base,
                kind=kind,
                files=len(file_rows),
                rows=int(base.inputs["rows"]),
                mean_batch_rows=None,  # measured in the predicted run itself: not known before it ran
                row_group_rows=row_group_rows,
            )
        if plan is not None and config in ("daftscale", "daftscale-tuned"):
            # Never from a run of the same plan: daftscale from the tuned run when that ran another plan,
            # the tuned plan from the daftscale run when it differs; else what the plan itself knew.
            other = "daftscale-tuned" if config == "daftscale" else "daftscale"
            source = reports.get(other)
            if source is not None and _plan_key(plan_from_report(source)[0]) != _plan_key(plan):
                if other not in fitted:
                    fitted[other] = _fit(source, pre_udf_seconds_per_row)
                costs, basis = fitted[other], BASIS_TUNED if other == "daftscale-tuned" else BASIS_DAFTSCALE
            elif plan.udf_profile:
                costs = Costs.from_plan(plan)
                if pre_udf_seconds_per_row:
                    costs = replace(costs, pre_udf_seconds_per_row=pre_udf_seconds_per_row)
                basis = BASIS_PROFILE
            else:
                plan = None
                note = "not predicted: no UDF profile and no run of another plan to calibrate from"
        if plan is None:
            out[config] = {
                "predicted_wall_s": None,
                "predicted_status": None,
                "prediction_note": note,
                "prediction_basis": None,
            }
            continue
        result = simulate(plan, cluster, costs=costs)
        if result.oom:
            # An out-of-memory run stops at its first failing batch: its wall time is not what is predicted.
            oom_note = f"predicted OOM: {result.verdict}"
            out[config] = {
                "predicted_wall_s": None,
                "predicted_status": "oom",
                "prediction_note": f"{note}; {oom_note}" if note else oom_note,
                "prediction_basis": basis,
            }
            continue
        out[config] = {
            "predicted_wall_s": round(result.makespan_s, 3),
            "predicted_status": "ok",
            "prediction_note": note,
            "prediction_basis": basis,
        }
    return out


def _fit(report: dict[str, Any], pre_udf_seconds_per_row: float | None) -> Any:
    from daftscale.simulate import costs_from_report

    return costs_from_report(
        report, max_task_overhead_s=RAY_TASK_OVERHEAD_S, pre_udf_seconds_per_row=pre_udf_seconds_per_row or 0.0
    )


def _plan_key(plan: Any) -> tuple[Any, ...]:
    """What makes two plans the same configuration (a run of the same plan is no held-out check)."""
    return (plan.strategy, plan.partitions, plan.partition_op, plan.into_batches, plan.batch_size, plan.concurrency)
