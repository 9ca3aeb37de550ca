"""Smoke test of the benchmark harness: one tiny workload × two configurations, end to end, on the shared
test cluster (conftest.py). It checks the plumbing (rows, keys, files), not performance."""

from __future__ import annotations

import json
import os
import time

import pytest

# The repository root is on sys.path: pytest puts the root conftest.py's directory there.
from bench.__main__ import run_bench, write_outputs
from bench.harness import PeerStalled, bounded
from bench.summary import schedule, summarize
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


# ---------------------------------------------------------------------------------------------------
# The new workloads (W5-W7), the expert grid and the targets, on tiny sizes: construction, not timing.


def _tiny(name: str, **changes: object) -> object:
    """A workload shrunk to seconds: ``changes`` replace its fields (e.g. fewer files, free UDF costs)."""
    from dataclasses import replace

    return replace(WORKLOADS[name], model=Costs(0.0, 0.0), **changes)


def test_new_workloads_are_registered_with_quick_sizes() -> None:
    from bench.configs import CONFIGS, DEFAULT_CONFIGS, PEERS
    from bench.workloads import QUICK_SCALE

    for name in ("W5", "W6", "W7"):
        assert name in WORKLOADS and name in QUICK_SCALE
    w5 = WORKLOADS["W5"].scaled(QUICK_SCALE["W5"])
    # A few hundred files of very uneven sizes: the largest holds hundreds of times the smallest.
    assert len(w5.file_rows) == 300 and max(w5.file_rows) > 100 * min(w5.file_rows)
    assert w5.rows_out == w5.groups and not w5.simulated
    w6 = WORKLOADS["W6"].scaled(QUICK_SCALE["W6"])
    # 600 documents explode into ~30 chunks each (seeded: the count is known before the run).
    assert w6.rows == 600 and 15_000 < w6.udf_rows < 21_000 and w6.rows_out == w6.udf_rows
    assert w6.ideal_s(8, 16) == pytest.approx(w6.udf_rows * w6.model.per_row_s / 8)
    assert WORKLOADS["W7"].model_kind == "minilm" and WORKLOADS["W7"].concurrency == 2
    assert {"ray-data-recommended", "expert"} <= set(DEFAULT_CONFIGS) and "daftscale-tuned" not in DEFAULT_CONFIGS
    assert set(PEERS) <= set(CONFIGS) and not any(p.startswith("daftscale") for p in PEERS)


def test_new_workload_data_is_made_as_declared(tmp_path) -> None:
    import pyarrow.parquet as pq
    from bench.workloads import chunk_counts, keys_path, make_data, power_law_rows

    w5 = _tiny("W5", file_rows=power_law_rows(400, 12))
    files = make_data(w5, str(tmp_path / "w5"))
    assert [pq.read_metadata(f).num_rows for f in files] == list(w5.file_rows)
    keys = pq.read_table(keys_path(files)).to_pydict()
    assert len(keys["key"]) == w5.join_keys and set(keys["category"]) == set(range(w5.groups))
    assert max(pq.read_table(files[0])["key"].to_pylist()) < w5.join_keys
    w6 = _tiny("W6", file_rows=(3, 2))
    texts = [t for f in make_data(w6, str(tmp_path / "w6")) for t in pq.read_table(f)["text"].to_pylist()]
    assert [len(t.split(". ")) for t in texts] == chunk_counts(w6)
    w7 = _tiny("W7", file_rows=(5,))
    (path,) = make_data(w7, str(tmp_path / "w7"))
    assert all(isinstance(t, str) and t for t in pq.read_table(path)["text"].to_pylist())


def test_expert_grid_is_small_and_respects_rows_and_memory() -> None:
    from bench.configs import expert_grid

    names = [p.name for p in expert_grid(WORKLOADS["W2"], 8)]
    assert 4 <= len(names) <= 6 and names[0] == "none, B=256"
    assert "repartition(8) + into_batches(512), B=256" in names
    # W3: 384 rows over 8 actors: no batch above 48 rows, so every actor gets work.
    assert all(p.batch_size <= 48 for p in expert_grid(WORKLOADS["W3"], 8))
    # W4: a 48 MiB budget and 1 MiB per decoded row: no batch above 48 rows.
    assert all(p.batch_size <= 48 for p in expert_grid(WORKLOADS["W4"], 8))


def test_targets_ratios_and_verdicts() -> None:
    from bench.report import render_targets, targets

    base = {"ideal_s": 5.0, "rows_in": 10, "rows_out": 10, "rows_out_expected": 10}
    summary = [
        {**base, "workload": "A", "config": "daftscale", "status": "ok", "wall_s": 10.0},
        {**base, "workload": "A", "config": "daft-default", "status": "ok", "wall_s": 9.0},
        {**base, "workload": "A", "config": "ray-data", "status": "ok", "wall_s": 12.0},
        {**base, "workload": "B", "config": "daftscale", "status": "ok", "wall_s": 8.0},
        {**base, "workload": "B", "config": "daft-default", "status": "oom", "wall_s": 3.0},
        {**base, "workload": "B", "config": "expert", "status": "ok", "wall_s": 8.2, "expert_point": "none, B=48"},
        {**base, "workload": "C", "config": "daftscale", "status": "error", "wall_s": 1.0},
        {**base, "workload": "C", "config": "daft-default", "status": "ok", "wall_s": 9.0},
    ]
    by = {t["workload"]: t for t in targets(summary, 2.0, ("daft-default", "ray-data", "expert"))}
    a = by["A"]
    assert (a["vs_daft_default"], a["vs_best_peer"], a["vs_ideal_after_start"]) == (1.11, 1.11, 1.6)
    assert not a["vs_daft_default_met"] and not a["vs_best_peer_met"] and not a["vs_ideal_after_start_met"]
    b = by["B"]
    # Daft default ran out of memory: daftscale finishing meets the target; the best peer is the expert.
    assert b["vs_daft_default"] is None and b["vs_daft_default_met"]
    assert b["best_peer"] == "expert (none, B=48)" and b["vs_best_peer"] == 0.98 and b["vs_best_peer_met"]
    assert b["vs_ideal_after_start"] == 1.2 and b["passed"]
    assert not by["C"]["passed"] and by["C"]["vs_daft_default_met"] is False
    text = "\n".join(render_targets(list(by.values())))
    assert "| B |" in text and "**FAIL**" in text
    # A peer left out with --configs is not judged: "n/a", not a pass or a fail.
    alone = targets([summary[0]], None, ("daft-default",))[0]
    assert alone["vs_daft_default_met"] is None and alone["vs_ideal_after_start_met"] is None
    assert not alone["passed"] and "n/a" in "\n".join(render_targets([alone]))


@pytest.mark.ray
@pytest.mark.parametrize("name", ["W5", "W6"])
def test_join_and_explode_pipelines_run_in_daft_and_ray_data(tmp_path, name: str) -> None:
    """W5 and W6 as Daft DataFrames (the pipeline daftscale runs, with a plan's scaling step) and as Ray
    Data Datasets (both Ray Data rows), on tiny data with free UDFs: the right rows come out of each."""
    import daft
    from bench import raydata
    from bench.harness import Sizing, daftscale_pipeline
    from bench.workloads import SleepModel, build_daft, make_data, model_args, power_law_rows

    from daftscale.udf import actor_udf

    # W5 keeps its per-row step (free here), so the join → step → model → groupby path runs.
    workload = _tiny(name, file_rows=power_law_rows(200, 8), read=Costs(0.0, 0.0) if name == "W5" else None)
    files = make_data(workload, str(tmp_path / name))
    sizing = Sizing(16, 1)
    model = actor_udf(SleepModel, sizing, return_dtype=daft.DataType.int64(), init_args=model_args(workload))
    out = build_daft(workload, files, lambda df: df.into_batches(32), model).to_pydict()
    assert len(out["out" if name == "W6" else "rows"]) == workload.rows_out
    if name == "W5":
        assert sum(out["rows"]) == workload.rows
    pipe = daftscale_pipeline(workload, files, 1)
    assert pipe.planner_kwargs == {"concurrency": 1}
    raydata.quiet()
    for options in ({}, {"num_blocks": 4, "batch_size": 16}):
        ds = raydata.build_raydata(workload, files, 1, None, **options)
        rows = ds.take_all()
        assert len(rows) == workload.rows_out
        if name == "W5":
            assert sum(r["rows"] for r in rows) == workload.rows


def test_daftscale_row_declares_only_pool_and_memory() -> None:
    """The daftscale configuration is `daftscale run` with no options: its pipeline declares the actor pool
    every configuration gets and W4's memory budget, never a UDF profile, batch size or scaling step."""
    from bench.harness import daftscale_pipeline

    assert daftscale_pipeline(WORKLOADS["W2"], ["x.parquet"], 8).planner_kwargs == {"concurrency": 8}
    w4 = daftscale_pipeline(WORKLOADS["W4"], ["x.parquet"], 8).planner_kwargs
    assert set(w4) == {"concurrency", "udf"} and w4["udf"].memory == WORKLOADS["W4"].udf_memory


def test_a_peer_that_never_finishes_is_stopped_and_reported() -> None:
    # No Ray here: the query stands in as a sleep longer than the limit (a peer once hung for 10 minutes).
    with pytest.raises(PeerStalled, match="no result after 0 s"):
        bounded(lambda _target: time.sleep(1.5) or (1, 1), None, 0.2)
    assert bounded(lambda target: (target, 1), 5, 10) == (5, 1)

    def fails(_target: object) -> tuple[int, int]:
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError):
        bounded(fails, None, 10)
