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
    assert by["a"]["vs_ideal"] == 2.0


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
