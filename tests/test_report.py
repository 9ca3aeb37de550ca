"""RunReport: derived figures from call records, report.json keys, a self-contained HTML, atomic writes."""

from __future__ import annotations

import json
import os
import re

import pytest

from daftscale.cluster import ClusterSpec
from daftscale.errors import RunError
from daftscale.plan import plan
from daftscale.profile import profile_numbers
from daftscale.report import RunReport, actor_utilization, fit_udf_cost

SPEC_KEYS = {
    "runner",
    "nodes",
    "wall_s",
    "rows_in",
    "rows_out",
    "partitions",
    "batches",
    "actors",
    "actor_utilization",
    "peak_memory_bytes",
    "plan",
}
SHARED_KEYS = {"udf_calls", "udf_profile", "node_peak_memory_bytes", "throughput", "stage_span_s", "cluster"}


def _report(calls: list[dict]) -> RunReport:
    cluster = ClusterSpec(nodes=2, cpus_per_node=2)
    p = plan(profile_numbers(1000, 100), cluster, concurrency=2, batch_size=10)
    return RunReport.from_run(
        runner="ray",
        cluster=cluster,
        plan=p,
        pipeline="pipeline.py",
        started_at=99.0,
        run_start=100.0,
        end=103.0,
        rows_in=1000,
        rows_out=1000,
        partitions=4,
        calls=calls,
        node_memory={"aaaa": 100 << 20, "bbbb": 300 << 20},
    )


# Absolute stamps as the collectors return them: each call costs 10 ms + 1 ms per row.
CALLS = [
    {"actor": "a1", "node": "aaaa", "start": 100.0 + i * 0.05, "end": 100.0 + i * 0.05 + 0.01 + 0.001 * r, "rows": r}
    for i, r in enumerate([10, 20, 10, 30, 10, 20])
] + [{"actor": "a2", "node": "bbbb", "start": 100.1, "end": 100.2, "rows": 10}]


def test_report_has_spec_and_shared_keys() -> None:
    data = json.loads(_report(CALLS).to_json())
    assert SPEC_KEYS | SHARED_KEYS <= set(data)
    assert data["batches"] == len(CALLS)
    assert data["peak_memory_bytes"] == 300 << 20
    assert set(data["udf_calls"][0]) == {"actor", "node", "start", "end", "rows"}
    assert data["udf_calls"][0]["start"] == pytest.approx(0.0)  # relative to run start
    assert data["throughput"][-1]["rows"] == sum(c["rows"] for c in CALLS)
    assert data["plan"]["batch_size"] == 10 and data["cluster"]["nodes"] == 2


def test_calibration_time_is_this_runs_only() -> None:
    # A saved plan carries the calibration of the run that made it: running it again calibrates nothing, so the
    # wall time row must not say "4.95 s of it calibrating" inside a 1.9 s plan time (seen with --plan).
    from dataclasses import replace

    cluster = ClusterSpec(nodes=2, cpus_per_node=2)
    calibrated = replace(plan(profile_numbers(1000, 100), cluster, concurrency=2), calibration={"elapsed_s": 4.95})
    common = dict(runner="ray", cluster=cluster, plan=calibrated, pipeline="p.py", started_at=99.0, run_start=100.0,
                  end=103.0, rows_in=10, rows_out=10, partitions=1, calls=CALLS, node_memory={})  # fmt: skip
    assert RunReport.from_run(**common).calibration_s == 4.95
    saved = RunReport.from_run(**common, calibrated=False)
    assert saved.calibration_s == 0 and "calibrating" not in dict(saved.summary())["wall time"]


def test_a_failed_first_attempt_is_named_in_the_wall_time() -> None:
    report = _report(CALLS)
    assert "first attempt" not in dict(report.summary())["wall time"]
    report.failed_attempt_s, report.total_s = 2.5, report.total_s + 2.5
    text = dict(RunReport.from_json(report.to_json()).summary())["wall time"]
    assert text.endswith("6.50 s in all, 2.50 s of it in a first attempt that failed)"), text


def test_udf_profile_fit_recovers_costs() -> None:
    fit = fit_udf_cost([{"rows": c["rows"], "start": c["start"], "end": c["end"]} for c in CALLS[:-1]])
    assert fit is not None
    assert fit["seconds_per_batch"] == pytest.approx(0.01, abs=1e-6)
    assert fit["seconds_per_row"] == pytest.approx(0.001, abs=1e-7)
    assert fit_udf_cost([{"rows": 5, "start": 0, "end": 1}] * 3) is None


def test_utilization_counts_idle_actors_and_overlaps_once() -> None:
    calls = [{"actor": "a", "start": 0.0, "end": 1.0}, {"actor": "a", "start": 0.5, "end": 1.0}]
    assert actor_utilization(calls, 1) == (1.0, 1.0)
    assert actor_utilization(calls, 4)[0] == pytest.approx(0.25)
    assert actor_utilization([], 4) == (0.0, 0.0)


def test_json_round_trip() -> None:
    report = _report(CALLS)
    assert RunReport.from_json(report.to_json()) == report
    with pytest.raises(RunError):
        RunReport.from_json('{"x": 1}')


def test_write_is_self_contained_atomic_and_refuses_to_clobber(tmp_path) -> None:
    report = _report(CALLS)
    html_path = report.write(tmp_path / "rep")
    names = sorted(os.listdir(tmp_path / "rep"))
    assert names == ["memory.png", "report.html", "report.json", "throughput.png", "timeline.png"]
    text = open(html_path).read()
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", text)
    assert text.count("data:image/png;base64,") == 3
    assert "Strategy: shuffle" in text  # the plan's explain()
    with pytest.raises(RunError, match="--overwrite"):
        report.write(tmp_path / "rep")
    report.write(tmp_path / "rep", overwrite=True)
    assert RunReport.read(tmp_path / "rep") == report


def test_summary_renders_without_calls(tmp_path) -> None:
    report = _report([])
    assert report.udf_profile is None and report.actor_utilization == 0.0
    report.write(tmp_path / "empty")
    assert "recorded no UDF calls" in open(tmp_path / "empty" / "report.html").read()


def _two_model_calls() -> list[dict]:
    # Two models, two actors each, over a 1 s UDF stage: Embed's actors busy all of it, Rank's half of it.
    def call(actor: str, udf: str, start: float) -> dict:
        return {"actor": actor, "node": "aaaa", "udf": udf, "start": start, "end": 101.0, "rows": 50}

    return [call(a, "Embed", 100.0) for a in ("e1", "e2")] + [call(a, "Rank", 100.5) for a in ("r1", "r2")]


@pytest.mark.parametrize("planned_models", [2, 1])
def test_two_models_utilisation_is_over_both_pools(planned_models: int) -> None:
    # Each model has a pool of the plan's 2 actors: busy time 3 s over 4 actors × 1 s is 75%. Over one pool
    # it read "4 of 2" actors used, 100% busy. Models kept at their authors' settings are not in the plan
    # (planned_models 1): the calls' two UDFs say there were two pools.
    cluster = ClusterSpec(nodes=2, cpus_per_node=2)
    p = plan(profile_numbers(1000, 100), cluster, concurrency=2, batch_size=50, models=planned_models)
    report = RunReport.from_run(
        runner="ray", cluster=cluster, plan=p, pipeline="two.py", started_at=99.0, run_start=100.0, end=102.0,
        rows_in=200, rows_out=200, partitions=4, calls=_two_model_calls(), node_memory={},
    )  # fmt: skip
    assert report.actors == 4 and report.actors_used == 4
    assert report.actor_utilization == pytest.approx(0.75)
    summary = dict(report.summary())
    assert summary["actors used"] == "4 of 4" and summary["actor utilisation"].startswith("75% busy")
    assert summary["plan"].endswith("4 actors (2 for each of 2 models)")
    assert {c["udf"] for c in report.udf_calls} == {"Embed", "Rank"}
    assert RunReport.from_json(report.to_json()) == report
