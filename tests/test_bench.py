"""Smoke test of the benchmark harness: one tiny workload × two configurations, end to end, on the shared
test cluster (conftest.py). It checks the plumbing (rows, keys, files), not performance."""

from __future__ import annotations

import json
import os

import pytest

# The repository root is on sys.path: pytest puts the root conftest.py's directory there.
from bench.__main__ import run_bench, write_outputs
from bench.harness import schedule, summarize
from bench.workloads import WORKLOADS, Costs

REQUIRED = {"workload", "config", "wall_s", "ideal_s", "rows_in", "rows_out", "peak_memory_bytes", "actor_utilization"}


def test_schedule_interleaves_configs() -> None:
    order = schedule(["W1"], ["a", "b"], 2)
    assert order == [("W1", "a", 0), ("W1", "b", 0), ("W1", "b", 1), ("W1", "a", 1)]


def test_summary_marks_failures_and_ratios() -> None:
    base = {"workload": "W", "ideal_s": 1.0, "rows_in": 10, "peak_memory_bytes": 0, "actor_utilization": 0.5}
    rows = [
        {**base, "config": "a", "status": "ok", "wall_s": 2.0, "rows_out": 10},
        {**base, "config": "b", "status": "ok", "wall_s": 4.0, "rows_out": 10},
        {**base, "config": "c", "status": "oom", "wall_s": 1.0, "rows_out": 0, "error": "MemoryError"},
    ]
    by = {s["config"]: s for s in summarize(rows)}
    assert by["a"]["vs_best_other"] == 0.5 and by["b"]["vs_best_other"] == 2.0
    assert by["c"]["status"] == "oom" and by["c"]["vs_best_other"] is None
    assert by["a"]["vs_ideal"] == 2.0 and by["a"]["vs_ideal_after_start"] is None
    # The summary judges predictions as the rows do (bench.predict.judge).
    predicted = [
        {**rows[0], "predicted_wall_s": 2.2, "predicted_status": "ok"},
        {**rows[1], "predicted_wall_s": 6.0, "predicted_status": "ok"},
        {**rows[2], "predicted_wall_s": None, "predicted_status": "oom"},
    ]
    judged = {s["config"]: s for s in summarize(predicted)}
    assert (judged["a"]["prediction_error"], judged["a"]["prediction_ok"]) == (0.1, True)
    assert (judged["b"]["prediction_error"], judged["b"]["prediction_ok"]) == (0.5, False)
    assert (judged["c"]["prediction_error"], judged["c"]["prediction_ok"]) == (None, True)
    # After the run's measured fixed start (a query with the pool and no work), the same wall time.
    after = {s["config"]: s for s in summarize(rows, fixed_start_s=0.5)}
    assert after["a"]["vs_ideal_after_start"] == 1.5 and after["b"]["vs_ideal_after_start"] == 3.5


@pytest.mark.ray
@pytest.mark.slow
def test_tiny_workload_two_configs_end_to_end(tmp_path: object) -> None:
    tiny = WORKLOADS["W3"].scaled(64 / WORKLOADS["W3"].rows)
    tiny = type(tiny)(**{**tiny.__dict__, "name": "tiny", "model": Costs(0.005, 0.001)})
    out = str(tmp_path)
    configs = ["seed-recipe", "daftscale"]
    doc = run_bench({"tiny": tiny}, configs, 1, out, concurrency=2, task_slots=4, log=lambda _: None, warm_up=False)
    assert len(doc["runs"]) == 2
    for row in doc["runs"]:
        assert REQUIRED <= row.keys(), row
        assert row["status"] == "ok", row
        assert row["rows_in"] == row["rows_out"] == 64
        assert row["actor_utilization"] > 0
    paths = write_outputs(doc, out)
    assert {s["config"] for s in json.load(open(paths["json"]))["summary"]} == {"seed-recipe", "daftscale"}
    assert "| tiny | daftscale |" in open(paths["md"]).read()
    assert os.path.getsize(paths["png"]) > 0
    # --repredict redoes the predictions from the saved reports without running anything.
    from bench.__main__ import repredict

    again = repredict(out, log=lambda _: None)
    assert [r["wall_s"] for r in again["runs"]] == [r["wall_s"] for r in doc["runs"]]
    assert any(r.get("predicted_wall_s") for r in again["runs"])


@pytest.mark.ray
def test_fixed_start_times_a_no_work_query(tmp_path: object) -> None:
    from bench.harness import Bench

    walls = Bench(str(tmp_path), concurrency=2, task_slots=4, log=lambda _: None).fixed_start(repeats=2)
    assert len(walls) == 2 and all(0 < w < 120 for w in walls)


def _sequential_report(p: object, fixed: float, per_row: float, wall_pad: float) -> dict[str, object]:
    """A run report of ``p`` on one actor: its calls back to back from 1 s on."""
    rows_total, batch = p.inputs["rows"], p.batch_size  # type: ignore[attr-defined]
    calls, t, left = [], 1.0, rows_total
    while left > 0:
        n = min(batch, left)
        calls.append({"actor": "a", "node": "n", "start": t, "end": t + fixed + n * per_row, "rows": n})
        t, left = t + fixed + n * per_row, left - n
    return {
        "wall_s": t + wall_pad,
        "nodes": 1,
        "rows_in": rows_total,
        "partitions": p.partitions,  # type: ignore[attr-defined]
        "actors": 1,
        "plan": p.to_dict(),  # type: ignore[attr-defined]
        "udf_calls": calls,
        "cluster": p.cluster,  # type: ignore[attr-defined]
    }


def test_predictions_never_use_the_predicted_run() -> None:
    from bench.predict import BASIS_DAFTSCALE, BASIS_PROFILE, BASIS_TUNED, attach, predict_workload
    from bench.report import render_markdown

    from daftscale import ClusterSpec, plan, profile_numbers

    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    # 150 and 300 rows per batch: each run's last batch is smaller (50, 200 rows), so a fit from either
    # run can tell per-call from per-row cost.
    p = plan(profile_numbers(2000, 100), cluster, concurrency=1, batch_size=150)
    tuned_plan = plan(profile_numbers(2000, 100), cluster, concurrency=1, batch_size=300)
    # Hand-written reports of the same workload (20 ms per call + 1 ms per row), not the simulator's schedule.
    report = _sequential_report(p, 0.02, 0.001, 0.5)
    tuned = _sequential_report(tuned_plan, 0.02, 0.001, 0.5)
    rows = [
        {"workload": "w", "config": c, "status": "ok", "wall_s": 4.0, "mean_batch_rows": 2000.0, "ideal_s": 1.0}
        | {"rows_in": 2000, "rows_out": 2000}
        for c in ("daft-default", "seed-recipe", "daftscale", "daftscale-tuned", "ray-data")
    ]
    predictions = predict_workload(
        {"daftscale": report, "daftscale-tuned": tuned}, rows, kind="light", file_rows=[2000]
    )
    assert predictions["ray-data"]["predicted_wall_s"] is None and predictions["ray-data"]["prediction_basis"] is None
    # Each daftscale run predicted from the other one's calibration, never from its own.
    assert predictions["daftscale"]["prediction_basis"] == BASIS_TUNED
    assert predictions["daftscale-tuned"]["prediction_basis"] == BASIS_DAFTSCALE
    assert predictions["daftscale"]["predicted_wall_s"] == pytest.approx(report["wall_s"], rel=0.05)
    assert predictions["daftscale-tuned"]["predicted_wall_s"] == pytest.approx(tuned["wall_s"], rel=0.05)
    # Baselines from the daftscale run; their batch is what was known before they ran, not their measured mean
    # (2,000 rows per call in these rows would make daft-default one call).
    assert predictions["seed-recipe"]["prediction_basis"] == BASIS_DAFTSCALE
    # One call of 2,000 rows pays the fixed cost once; 100 calls of 64 rows (seed) pay it 32 times.
    assert predictions["daft-default"]["predicted_wall_s"] < predictions["seed-recipe"]["predicted_wall_s"]
    attach(rows, predictions)
    assert rows[0]["prediction_error"] == pytest.approx(rows[0]["predicted_wall_s"] / 4.0 - 1, abs=1e-3)
    assert rows[0]["prediction_basis"] == BASIS_DAFTSCALE and rows[4]["prediction_error"] is None
    summary = summarize(rows)
    assert {s["config"]: s["prediction_basis"] for s in summary}["daftscale"] == BASIS_TUNED
    doc = {"meta": {"concurrency": 1, "repeats": 1, "ideal_formula": "-"}, "summary": summary}
    text = render_markdown(doc)
    assert "predicted s" in text and "| - |" in text

    # One daftscale run only: it is not predicted (no profile, no other plan's run) rather than fitted to itself.
    alone = predict_workload({"daftscale": report}, rows[2:3], kind="light", file_rows=[2000])
    assert alone["daftscale"]["predicted_wall_s"] is None and "not predicted" in alone["daftscale"]["prediction_note"]
    # With the UDF profile the plan was made with, it is predicted from that profile.
    profiled = {
        **report,
        "plan": {**report["plan"], "udf_profile": {"seconds_per_batch": 0.02, "seconds_per_row": 0.001}},
    }
    by_profile = predict_workload({"daftscale": profiled}, rows[2:3], kind="light", file_rows=[2000])
    assert by_profile["daftscale"]["prediction_basis"] == BASIS_PROFILE
    assert by_profile["daftscale"]["predicted_wall_s"] is not None


@pytest.mark.parametrize("content", [None, "{not json", '{"meta": {}}'])
def test_repredict_bad_directory_is_one_line_exit_2(tmp_path, content: str | None) -> None:
    import subprocess
    import sys

    if content is not None:
        (tmp_path / "results.json").write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--repredict", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot re-predict" in lines[0] and "--out" in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--scale", "0"], "--scale must be above 0, got 0"),
        (["--repeats", "0"], "--repeats must be at least 1"),
        (["--workloads", "W1,W9"], "--workloads 'W1,W9': unknown W9: choose from W1, W2, W3, W4"),
        (["--workloads", ","], "unknown empty"),
    ],
)
def test_probe_options_bad_input_is_one_line_exit_2(capsys, argv: list[str], message: str) -> None:
    from bench.probes.common import parse_args

    with pytest.raises(SystemExit) as exit_info:
        parse_args("Probe.", "probe", argv, default_scale=8.0, workloads="W1")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    good = parse_args("Probe.", "probe", ["--workloads", "w2, W1"], default_scale=8.0, workloads="W1")
    assert good.scale == 8.0 and good.workloads == ["W2", "W1"]
