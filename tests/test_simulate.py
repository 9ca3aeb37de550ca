"""The simulator: sanity ratios that cannot pass by accident, calibration round trips, speed, the CLI."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daftscale import ClusterSpec, Costs, SimulationResult, plan, profile_numbers, simulate
from daftscale.cli import main
from daftscale.errors import ConfigError
from daftscale.plan import ScalingPlan, UdfResources
from daftscale.simulate import costs_from_report, plot_utilization

# The DAFT_NOTES probe's model: 20 ms per call + 0.5 ms per row.
UDF = Costs(seconds_per_row=5e-4, seconds_per_batch=0.02)


def _plan(rows: int, nodes: int, cpus: int = 4, **kwargs: object) -> ScalingPlan:
    return plan(profile_numbers(rows, 100), ClusterSpec(nodes=nodes, cpus_per_node=cpus), **kwargs)  # type: ignore[arg-type]


def test_doubling_nodes_with_enough_partitions_halves_makespan() -> None:
    small = simulate(_plan(10_000_000, 4), costs=UDF)
    big = simulate(_plan(10_000_000, 8), costs=UDF)
    ratio = big.makespan_s / small.makespan_s
    print(f"4 nodes {small.makespan_s:.1f} s, 8 nodes {big.makespan_s:.1f} s, ratio {ratio:.3f}")
    assert 0.45 < ratio < 0.6
    assert small.utilization > 0.85 and big.utilization > 0.85


def test_one_partition_feeding_many_actors_leaves_them_idle() -> None:
    good_plan = _plan(200_000, 4, concurrency=16, batch_size=64)
    bad_plan = replace(good_plan, partitions=1, partition_op="into_partitions", into_batches=None)
    good, bad = simulate(good_plan, costs=UDF), simulate(bad_plan, costs=UDF)
    print(
        f"good {good.utilization:.2f} in {good.makespan_s:.1f} s; "
        f"one partition {bad.utilization:.2f} in {bad.makespan_s:.1f} s"
    )
    assert good.utilization > 0.8
    # One task reaches one node: at most its 4 of 16 actors work.
    assert bad.utilization < 0.3
    assert bad.makespan_s > 2.5 * good.makespan_s
    assert "too few tasks" in bad.bottleneck


def test_shrinking_memory_flips_the_verdict_to_oom() -> None:
    base = plan(profile_numbers(10_000_000, 1000), ClusterSpec(nodes=4, cpus_per_node=4), concurrency=16)
    few_huge = replace(base, partitions=4)  # 2.5 M rows × 3 KB decoded per task
    roomy = simulate(few_huge, ClusterSpec.declared(nodes=4, cpus_per_node=4, memory_per_node="64GiB"), costs=UDF)
    tight = simulate(few_huge, ClusterSpec.declared(nodes=4, cpus_per_node=4, memory_per_node="8GiB"), costs=UDF)
    assert not roomy.oom and roomy.verdict.startswith("fits")
    assert tight.oom and "Ray kills workers" in tight.verdict
    assert tight.peak_memory_bytes == roomy.peak_memory_bytes - (roomy.peak_memory_bytes - tight.peak_memory_bytes)
    assert tight.peak_memory_bytes > 0.95 * 8 * 2**30


def test_big_cluster_answers_in_seconds() -> None:
    cluster = ClusterSpec.declared(nodes=1000, cpus_per_node=32, gpus_per_node=8, memory_per_node="512GiB")
    start = time.perf_counter()
    big_plan = plan(profile_numbers(2_000_000_000, 100), cluster, udf=UdfResources.of(gpus=1))
    result = simulate(big_plan, costs=UDF)
    elapsed = time.perf_counter() - start
    print(f"1000 nodes × 8 GPUs × 2e9 rows: simulated in {elapsed:.2f} s -> makespan {result.makespan_s:,.0f} s")
    assert result.actors == 8000
    assert result.tasks == big_plan.partitions
    assert elapsed < 20
    # The bound every schedule respects: total actor work over the actors.
    assert result.makespan_s >= result.busy_s / result.actors


def test_big_single_node_extrapolates_within_budget() -> None:
    # 10⁸ rows on one node is more events than the budget: simulated on prefixes and extrapolated.
    one = _plan(100_000_000, 1, cpus=8, concurrency=8, batch_size=64)
    start = time.perf_counter()
    result = simulate(one, costs=UDF)
    elapsed = time.perf_counter() - start
    assert elapsed < 20
    assert any("extrapolated" in a for a in result.approximations)
    ideal = result.busy_s / result.actors
    assert ideal <= result.stages["udf"] < 1.1 * ideal


def test_calibration_recovers_udf_costs_from_calls() -> None:
    fixed, per_row, gap = 0.02, 0.0005, 0.003
    calls, t = [], 1.0
    for i, rows in enumerate([64, 50, 30, 64, 10, 64, 40, 64] * 5):
        actor = f"a{i % 2}"
        calls.append({"actor": actor, "node": "n0", "start": t, "end": t + fixed + per_row * rows, "rows": rows})
        if i % 2:
            t += fixed + per_row * 64 + gap
    report = {"wall_s": t + 1.0, "nodes": 1, "udf_calls": calls, "udf_profile": None}
    costs = costs_from_report(report)
    assert costs.seconds_per_batch == pytest.approx(fixed, rel=1e-6)
    assert costs.seconds_per_row == pytest.approx(per_row, rel=1e-6)
    assert costs.source == "calibration report"


def _report_from_schedule(p: ScalingPlan, truth: Costs) -> dict[str, object]:
    """What a run of ``p`` on 1 slot and 1 actor records: tasks one after another, calls back to back."""
    assert p.cluster["nodes"] == 1 and p.cluster["cpus_per_node"] == 1 and p.concurrency == 1
    first = simulate(p, costs=truth).first_call_s
    rows_total, parts, batch = p.inputs["rows"], p.partitions, p.batch_size
    assert parts is not None
    calls, t = [], first
    for k in range(parts):
        rows = rows_total // parts + (1 if k < rows_total % parts else 0)
        if k:
            t += truth.task_overhead_s
        while rows > 0:
            n = min(batch, rows)
            begin = t + truth.dispatch_s
            end = begin + truth.seconds_per_batch + n * truth.seconds_per_row
            calls.append({"actor": "a", "node": "n", "start": begin, "end": end, "rows": n})
            t, rows = end, rows - n
    return {
        "runner": "ray",
        "nodes": 1,
        "wall_s": t + truth.tail_s,
        "rows_in": rows_total,
        "rows_out": rows_total,
        "partitions": parts,
        "batches": len(calls),
        "actors": 1,
        "plan": p.to_dict(),
        "udf_calls": calls,
        "udf_profile": None,
        "cluster": p.cluster,
    }


def test_calibration_round_trip_predicts_other_configurations() -> None:
    truth = Costs(
        seconds_per_row=0.0005, seconds_per_batch=0.02, dispatch_s=0.004, task_overhead_s=0.3, startup_s=2.5, tail_s=0.4
    )
    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    small = plan(profile_numbers(900, 100), cluster, concurrency=1, batch_size=50)
    report = _report_from_schedule(small, truth)
    fitted = costs_from_report(report)
    assert fitted.seconds_per_batch == pytest.approx(truth.seconds_per_batch, rel=1e-6)
    assert fitted.seconds_per_row == pytest.approx(truth.seconds_per_row, rel=1e-6)
    assert fitted.dispatch_s == pytest.approx(truth.dispatch_s, rel=1e-6)
    assert fitted.task_overhead_s == pytest.approx(truth.task_overhead_s, rel=1e-3)
    assert fitted.startup_s == pytest.approx(truth.startup_s, abs=1e-3)
    assert fitted.tail_s == pytest.approx(truth.tail_s, abs=1e-6)
    # Another configuration of the same workload: more partitions, bigger batches, more rows.
    other = plan(profile_numbers(20_000, 100), cluster, concurrency=1, batch_size=256)
    predicted = simulate(other, costs=fitted).makespan_s
    actual = simulate(other, costs=truth).makespan_s
    assert predicted == pytest.approx(actual, rel=0.01)


def test_calibration_reads_a_report_file(tmp_path: Path) -> None:
    truth = Costs(seconds_per_row=0.001, seconds_per_batch=0.01, dispatch_s=0.002, task_overhead_s=0.1)
    small = plan(profile_numbers(900, 100), ClusterSpec(nodes=1, cpus_per_node=1), concurrency=1, batch_size=50)
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report_from_schedule(small, truth)))
    from_file = simulate(small, calibration=path)
    assert from_file.makespan_s == pytest.approx(simulate(small, costs=truth).makespan_s, rel=1e-3)
    assert from_file.assumptions == [] or all("default" not in a for a in from_file.assumptions[:6])


def test_bad_calibration_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        costs_from_report(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="no udf_calls"):
        costs_from_report({"wall_s": 1.0, "udf_calls": []})


def test_default_costs_are_stated_as_assumptions() -> None:
    result = simulate(_plan(100_000, 2))
    named = " ".join(result.assumptions)
    for name in ("seconds_per_row", "seconds_per_batch", "task_overhead_s", "startup_s"):
        assert name in named
    data = json.loads(result.to_json())
    assert {"makespan_s", "utilization", "peak_memory_bytes", "oom", "bottleneck", "approximations"} <= set(data)


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1_000, 2_000_000),
    nodes=st.integers(1, 16),
    cpus=st.integers(1, 8),
    batch=st.integers(1, 512),
    per_row=st.floats(1e-6, 1e-2),
    per_call=st.floats(0.0, 0.1),
    partitions=st.one_of(st.none(), st.integers(1, 5_000)),
)
def test_simulation_invariants(
    rows: int, nodes: int, cpus: int, batch: int, per_row: float, per_call: float, partitions: int | None
) -> None:
    p = _plan(rows, nodes, cpus=cpus, batch_size=batch)
    if partitions is not None:
        p = replace(p, partitions=partitions)
    costs = Costs(seconds_per_row=per_row, seconds_per_batch=per_call)
    result = simulate(p, costs=costs)
    assert 0.0 <= result.utilization <= 1.0
    assert 0.0 <= result.utilization_of_makespan <= result.utilization + 1e-9
    # No schedule beats total actor work spread perfectly over every actor.
    assert result.stages["udf"] >= result.busy_s / result.actors * (1 - 1e-9)
    assert result.makespan_s >= costs.startup_s + costs.tail_s + result.busy_s / result.actors * (1 - 1e-9)
    expected_calls = result.batches
    assert result.busy_s == pytest.approx(
        expected_calls * (costs.dispatch_s + per_call) + rows * per_row, rel=1e-6, abs=1e-9
    )
    assert all(0.0 <= u <= 1.0 for _, u in result.timeline)


def test_plot_is_written(tmp_path: Path) -> None:
    result = simulate(_plan(100_000, 2), costs=UDF)
    out = plot_utilization(result, tmp_path / "util.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


# ---------------------------------------------------------------------------------------------------
# CLI

SEED_ARGS = ["--rows", "1000000", "--nodes", "4", "--cpus-per-node", "4", "--concurrency", "16", "--batch-size", "64"]
SEED_COSTS = ["--udf-seconds-per-row", "0.0005", "--udf-seconds-per-batch", "0.02"]


def test_cli_simulate_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", *SEED_ARGS, *SEED_COSTS]) == 0
    out = capsys.readouterr().out
    assert "makespan:" in out and "utilization:" in out and "bottleneck:" in out
    assert "partitions 977" in out
    assert "startup_s = 5 (default" in out  # defaults are owned up to


def test_cli_simulate_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    png = tmp_path / "u.png"
    assert main(["simulate", *SEED_ARGS, *SEED_COSTS, "--format", "json", "--plot", str(png)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["makespan_s"] > 0 and 0 < data["utilization"] <= 1
    assert data["oom"] is False and isinstance(data["approximations"], list)
    assert data["costs"]["seconds_per_row"] == 0.0005
    assert png.exists()
    # An existing plot is not clobbered without --overwrite.
    assert main(["simulate", *SEED_ARGS, *SEED_COSTS, "--plot", str(png)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["simulate", *SEED_ARGS, *SEED_COSTS, "--plot", str(png), "--overwrite"]) == 0


def test_cli_simulates_a_plan_file_on_another_cluster(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.json"
    assert main(["plan", *SEED_ARGS, *SEED_COSTS, "--format", "json"]) == 0
    text = capsys.readouterr().out
    assert json.loads(text)["predicted"]["makespan_s"] > 0
    plan_file.write_text(text)
    assert main(["simulate", "--plan", str(plan_file), "--format", "json"]) == 0
    on_four = json.loads(capsys.readouterr().out)
    assert main(["simulate", "--plan", str(plan_file), "--nodes", "8", "--cpus-per-node", "4", "--format", "json"]) == 0
    on_eight = json.loads(capsys.readouterr().out)
    # Same plan, same 16 actors: 8 nodes give 2 actors each, so no faster than on 4.
    assert on_eight["actors"] == on_four["actors"] == 16
    assert on_eight["makespan_s"] == pytest.approx(on_four["makespan_s"], rel=0.1)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["simulate", "--plan", "/nonexistent/plan.json"], "plan file /nonexistent/plan.json not found"),
        (["simulate", "--plan", "x.json", "--rows", "10"], "--plan cannot be combined"),
        (["simulate", *SEED_ARGS, "--calibration", "/nonexistent/report.json"], "calibration report"),
        (["simulate", *SEED_ARGS, "--udf-seconds-per-batch", "-1"], "--udf-seconds-per-batch"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0]


def test_cli_rejects_a_file_that_is_not_a_plan(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bogus = tmp_path / "report.json"
    bogus.write_text(json.dumps({"wall_s": 1.0}))
    assert main(["simulate", "--plan", str(bogus)]) == 2
    assert "not a daftscale plan" in capsys.readouterr().err


def test_result_is_exported() -> None:
    assert isinstance(simulate(_plan(10_000, 1), costs=UDF), SimulationResult)
    assert math.isfinite(simulate(_plan(10_000, 1), costs=UDF).makespan_s)


def test_calibration_caps_task_overhead_and_fits_the_rest_per_row() -> None:
    truth = Costs(seconds_per_row=0.0005, seconds_per_batch=0.02, dispatch_s=0.004, task_overhead_s=0.3)
    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    small = plan(profile_numbers(900, 100), cluster, concurrency=1, batch_size=50)
    report = _report_from_schedule(small, truth)
    fitted = costs_from_report(report, max_task_overhead_s=0.05)
    assert fitted.task_overhead_s == pytest.approx(0.05)
    assert fitted.pre_udf_seconds_per_row > 0
    assert any("pre-UDF work" in n for n in fitted.notes)
    # The run it was fitted on is still explained.
    assert simulate(small, costs=fitted).makespan_s == pytest.approx(report["wall_s"], rel=0.02)
