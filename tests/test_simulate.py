"""The simulator: sanity ratios that cannot pass by accident, calibration round trips, speed, the CLI.

The round trips (a report written from a known schedule, fitted back) check the fit's arithmetic, not the
simulator's accuracy: that is checked against real runs it was not calibrated on in
``test_simulate_heldout.py``.
"""

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
from daftscale.simulate import costs_from_report, plan_from_report, plot_utilization

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
    # The tasks need the same either way; the smaller node's object store (30 % of its memory) holds less
    # of the shuffled data, and the rest spills to disk, so its peak is lower, not higher.
    assert tight.peak_memory_bytes < roomy.peak_memory_bytes
    assert roomy.spilled_bytes == 0 < tight.spilled_bytes
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
    # The claim is seconds, not minutes: about 2 s idle; 60 s leaves room for a loaded 2-core machine.
    assert elapsed < 60
    # The bound every schedule respects: total actor work over the actors.
    assert result.makespan_s >= result.busy_s / result.actors


def test_big_single_node_extrapolates_within_budget() -> None:
    # 10⁸ rows on one node is more events than the budget: simulated on prefixes and extrapolated.
    one = _plan(100_000_000, 1, cpus=8, concurrency=8, batch_size=64)
    start = time.perf_counter()
    result = simulate(one, costs=UDF)
    elapsed = time.perf_counter() - start
    assert elapsed < 60  # seconds, not minutes: generous for a loaded 2-core machine (about 2 s idle)
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


def _report_from_schedule(p: ScalingPlan, truth: Costs, *, pool: bool = False) -> dict[str, object]:
    """What a run of ``p`` on 1 slot, 1 CPU and 1 actor records: tasks one after another, each through its
    overhead, then batch by batch: its one compute thread does a batch's pre-UDF work while the actor runs
    the previous batch. With ``pool`` the report also has the measured actor-pool start."""
    assert p.cluster["nodes"] == 1 and p.cluster["cpus_per_node"] == 1 and p.concurrency == 1
    assert not p.into_batches
    sim = simulate(p, costs=truth)
    rows_total, parts, batch = p.inputs["rows"], p.partitions, p.batch_size
    assert parts is not None
    calls: list[dict[str, object]] = []
    # The first task starts where the model's does: its first call less its overhead and first batch.
    t = sim.first_call_s - truth.task_overhead_s - min(batch, rows_total // parts) * truth.pre_udf_seconds_per_row
    actor_free = t
    for k in range(parts):
        rows = rows_total // parts + (1 if k < rows_total % parts else 0)
        thread = t + truth.task_overhead_s
        while rows > 0:
            n = min(batch, rows)
            thread += n * truth.pre_udf_seconds_per_row  # the batch is through its pre-UDF work
            begin = max(thread, actor_free) + truth.dispatch_s
            end = begin + truth.seconds_per_batch + n * truth.seconds_per_row
            calls.append({"actor": "a", "node": "n", "start": begin, "end": end, "rows": n})
            actor_free, rows = end, rows - n
        t = actor_free  # the slot frees when the task's last call returns
    report: dict[str, object] = {
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
    if pool:
        # Daft starts the pool after the shuffle and calls nothing before every actor is ready.
        ready = sim.stages["startup"] + sim.stages["shuffle"]
        report["actor_startup_s"] = ready
        report["actor_starts"] = [{"actor": "a", "node": "n", "spawned": 0.0, "start": 0.5, "end": ready}]
    return report


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
        (["simulate", "--plan", "/nonexistent/plan.json"], "plan file /nonexistent/plan.json does not exist"),
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


def test_calibration_takes_per_task_cost_from_the_measured_pool_start() -> None:
    # With the pool's start measured, the lead to the first call is one task's own cost: charged in full,
    # as measured (no cap applies to a measurement), and start-up is the pool's start itself.
    truth = Costs(
        seconds_per_row=0.0005, seconds_per_batch=0.02, dispatch_s=0.004, task_overhead_s=0.3, startup_s=2.0, tail_s=0.3
    )
    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    small = plan(profile_numbers(900, 100), cluster, concurrency=1, batch_size=50)
    report = _report_from_schedule(small, truth, pool=True)
    fitted = costs_from_report(report, max_task_overhead_s=0.05)
    assert fitted.task_overhead_s == pytest.approx(0.3, rel=1e-3)
    assert fitted.pre_udf_seconds_per_row == 0.0
    assert fitted.startup_s == pytest.approx(2.0, abs=1e-3)
    assert any("actor pool measured ready" in n for n in fitted.notes)
    bigger = plan(profile_numbers(20_000, 100), cluster, concurrency=1, batch_size=256)
    expected = simulate(bigger, costs=truth).makespan_s
    assert simulate(bigger, costs=fitted).makespan_s == pytest.approx(expected, rel=0.01)
    # An __init__ that ended after the first call was an actor built on its first batch, not the pool's
    # start: the report then does not show it, and start-up comes from the first call.
    first_call = min(float(c["start"]) for c in report["udf_calls"])  # type: ignore[attr-defined]
    late = costs_from_report({**report, "actor_startup_s": first_call + 1.0})
    assert any("pool's start is not seen" in n for n in late.notes)
    assert late.startup_s == pytest.approx(2.0, abs=1e-3)


def test_calibration_does_not_split_the_lead_into_per_row_work() -> None:
    # One lead is one task's latency plus its first batch's work: one number, two unknowns. Charging the part
    # above a per-task guess per row made one 384-row task of a workload with no pre-UDF step "read" for
    # seconds; the lead is charged per task, and per-row work comes from a profile of that step.
    truth = Costs(seconds_per_row=0.0005, seconds_per_batch=0.02, dispatch_s=0.004, task_overhead_s=0.15)
    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    small = plan(profile_numbers(900, 100), cluster, concurrency=1, batch_size=50)
    fitted = costs_from_report(_report_from_schedule(small, truth, pool=True), max_task_overhead_s=0.05)
    assert fitted.pre_udf_seconds_per_row == 0.0
    one_task = replace(small, partitions=1)
    assert simulate(one_task, costs=fitted).makespan_s == pytest.approx(
        simulate(one_task, costs=truth).makespan_s, rel=0.01
    )


def _actor_bound_report() -> tuple[ScalingPlan, dict[str, object]]:
    """A run on 1 node of 8 CPUs and 2 actors, 64 tasks of 100 rows, no work before the UDF: the actors are
    busy throughout, and the span runs 8 % past the model's (their uneven load, a slow start: noise the
    model does not have)."""
    p = replace(
        plan(profile_numbers(6400, 100), ClusterSpec(nodes=1, cpus_per_node=8), concurrency=2, batch_size=50),
        strategy="shuffle",
        partitions=64,
        partition_op="repartition",
        into_batches=None,
    )
    calls = []
    for a in range(2):
        t = 2.0 + 0.1 * a
        for _ in range(64):
            calls.append({"actor": f"a{a}", "node": "n", "start": t, "end": t + 0.045, "rows": 50})
            t += 0.045 + (0.005 if a == 0 else 0.0055)
    last = max(c["end"] for c in calls)
    report = {
        "nodes": 1,
        "wall_s": last + 0.2,
        "rows_in": 6400,
        "partitions": 64,
        "actors": 2,
        "plan": p.to_dict(),
        "udf_calls": calls,
        "udf_profile": {"seconds_per_batch": 0.02, "seconds_per_row": 0.0005},
        "cluster": p.cluster,
    }
    return p, report


def test_calibration_from_an_actor_bound_span_invents_no_per_row_work() -> None:
    # While the actors are busy the span does not move until per-row work starves them: fitting the span's
    # excess per row finds that threshold (about the UDF's own cost per row), which would make one big task
    # take twice its real time. It is not fitted; the note says why.
    p, report = _actor_bound_report()
    fitted = costs_from_report(report, max_task_overhead_s=0.05)
    assert fitted.pre_udf_seconds_per_row == 0.0
    assert any("not fitted" in n for n in fitted.notes)
    one_task = replace(p, partitions=1)
    result = simulate(one_task, costs=fitted)
    # One task feeds both actors of its node: the stage is the actors' work, not that plus made-up reading.
    assert result.stages["udf"] < 1.2 * result.busy_s / result.actors


def test_calibration_dispatch_is_the_mean_back_to_back_gap() -> None:
    # What the actors lose between calls is the sum of the gaps: a few slow ones count.
    calls, t = [], 1.0
    for i, rows in enumerate([10, 20, 30, 40] * 5):
        calls.append({"actor": "a", "node": "n", "start": t, "end": t + 0.1 + 0.001 * rows, "rows": rows})
        t += 0.1 + 0.001 * rows + (0.012 if i % 4 == 3 else 0.002)
    fitted = costs_from_report({"wall_s": t, "nodes": 1, "udf_calls": calls})
    assert fitted.dispatch_s == pytest.approx((15 * 0.002 + 4 * 0.012) / 19, rel=1e-6)


def test_report_plan_keeps_the_shuffle_partitions_of_an_into_batches_plan() -> None:
    # A report's "partitions" counts the partitions out; with into_batches those are its tasks, not the
    # shuffle's partitions, which the calibration must keep (12 here, not 63).
    p = replace(
        plan(profile_numbers(384, 100), ClusterSpec(nodes=4, cpus_per_node=4), concurrency=8, batch_size=4),
        strategy="shuffle",
        partitions=12,
        partition_op="repartition",
        into_batches=6,
    )
    report = {"nodes": 4, "wall_s": 5.0, "rows_in": 384, "partitions": 63, "actors": 8, "plan": p.to_dict()}
    ran, _ = plan_from_report(report)
    assert ran.partitions == 12 and ran.into_batches == 6


def test_one_big_task_does_its_pre_udf_work_on_every_cpu_of_its_node() -> None:
    # Daft's UDF operator runs as many morsels at once as the worker has CPUs: one task of 40,000 rows with
    # 1 ms of reading per row on a 4-CPU node reads in about 10 s, not 40 s.
    p = replace(
        plan(profile_numbers(40_000, 100), ClusterSpec(nodes=1, cpus_per_node=4), concurrency=2, batch_size=5000),
        strategy="streaming",
        partitions=None,
        partition_op=None,
        into_batches=None,
        inputs={**_plan(40_000, 1).inputs, "files": 1, "file_rows": [40_000]},
    )
    costs = Costs(seconds_per_row=1e-5, seconds_per_batch=0.0, task_overhead_s=0.0, pre_udf_seconds_per_row=1e-3)
    result = simulate(p, costs=costs)
    assert result.tasks == 1
    assert 10.0 <= result.stages["udf"] < 11.0


def test_uneven_files_keep_their_own_sizes_on_every_node() -> None:
    # 9 files on 4 nodes of 2 actors: the 9,600-row file's node finishes last. Folding the nodes into one
    # class would give each of the first four tasks their mean (4,800 rows) and halve the straggler.
    files = [9600, 4800, 2880, 1920, 1440, 1200, 960, 720, 480]
    base = plan(profile_numbers(sum(files), 4096), ClusterSpec(nodes=4, cpus_per_node=4), concurrency=8)
    p = replace(
        base,
        strategy="streaming",
        partitions=None,
        partition_op=None,
        into_batches=None,
        batch_size=2400,
        inputs={**base.inputs, "files": len(files), "file_rows": files},
    )
    result = simulate(p, costs=Costs(seconds_per_row=0.002, seconds_per_batch=0.02, task_overhead_s=0.0))
    # The largest file alone: 4 batches of 2,400 rows over its node's 2 actors.
    assert result.stages["udf"] >= 2 * (0.02 + 0.002 + 2400 * 0.002)


def _memory_plan(batch: int) -> ScalingPlan:
    """A UDF that decodes 1 MiB per row, with 48 MiB of declared memory per actor (the bench's W4)."""
    p = plan(
        profile_numbers(12_000, 2048),
        ClusterSpec.declared(nodes=4, cpus_per_node=4, memory_per_node="16GiB"),
        concurrency=8,
        batch_size=batch,
        udf=UdfResources.of(memory="48MiB"),
    )
    return replace(p, batch_size=batch, udf_profile={"memory_per_row_bytes": float(1 << 20)})


def test_a_udf_batch_over_the_actor_memory_is_an_oom() -> None:
    over = simulate(_memory_plan(64), costs=UDF)
    under = simulate(_memory_plan(23), costs=UDF)
    assert over.oom and over.actor_oom
    assert over.udf_batch_bytes == 64 << 20 and over.udf_memory_bytes == 48 << 20
    assert "64.0 MiB in one actor" in over.verdict and "at most 48 rows" in over.verdict
    assert not under.oom and not under.actor_oom and under.verdict.startswith("fits")
    assert "23.0 MiB of the actor's 48.0 MiB" in under.verdict
    # Said in both outputs.
    assert over.to_dict()["actor_oom"] is True and over.prediction()["oom"] is True
    assert "OOM: a UDF batch of 64 rows" in over.describe()
    # A task smaller than the batch sends a smaller batch.
    small_tasks = replace(_memory_plan(64), strategy="shuffle", partitions=400, partition_op="repartition")
    assert not simulate(small_tasks, costs=UDF).actor_oom


def test_delivered_fragments_multiply_the_calls_and_their_cost() -> None:
    # 1 node, 1 CPU, 1 actor: the actor's busy time is every call's fixed cost plus every row's.
    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    p = plan(profile_numbers(6_400, 100), cluster, concurrency=1, batch_size=64)
    fragmented = Costs(seconds_per_row=5e-4, seconds_per_batch=0.02, delivered_rows_per_call=4.7)
    full = simulate(p, costs=replace(fragmented, delivered_rows_per_call=None))
    frag = simulate(p, costs=fragmented)
    # Counted here, not by the simulator: each task's rows in calls of at most 4.7 rows (mean).
    assert full.tasks == frag.tasks
    base, extra = divmod(6_400, frag.tasks)
    expected_calls = extra * math.ceil((base + 1) / 4.7) + (frag.tasks - extra) * math.ceil(base / 4.7)
    assert frag.batches == expected_calls
    assert full.batches == extra * math.ceil((base + 1) / 64) + (frag.tasks - extra) * math.ceil(base / 64)
    per_call = fragmented.dispatch_s + fragmented.seconds_per_batch
    assert frag.busy_s == pytest.approx(expected_calls * per_call + 6_400 * 5e-4, rel=1e-9)
    # One actor does all the work: the makespan grows by (at least) the extra calls' fixed cost.
    assert frag.makespan_s - full.makespan_s >= 0.99 * (expected_calls - full.batches) * per_call
    assert any("fragments" in a for a in frag.approximations)
    # A fragment size at or above B is a full batch.
    assert simulate(p, costs=replace(fragmented, delivered_rows_per_call=500.0)).batches == full.batches
    with pytest.raises(ConfigError, match="delivered_rows_per_call"):
        Costs(delivered_rows_per_call=0.0)


def test_calibration_fills_delivered_rows_from_fragmented_calls() -> None:
    # A run of B=64 whose calls carried 3 to 7 rows (a join's fragments): hand-written records, not the
    # simulator's schedule, 2,000 rows in 400 calls back to back on one actor.
    cluster = ClusterSpec(nodes=1, cpus_per_node=1)
    p = plan(profile_numbers(2_000, 100), cluster, concurrency=1, batch_size=64)
    calls, t = [], 1.0
    for i in range(400):
        rows = 3 + (i % 5)  # 3..7, mean 5
        calls.append({"actor": "a", "node": "n", "start": t, "end": t + 0.01 + 0.001 * rows, "rows": rows})
        t += 0.01 + 0.001 * rows + 0.002
    report = {
        "runner": "ray",
        "nodes": 1,
        "wall_s": t + 0.3,
        "rows_in": 2_000,
        "rows_out": 2_000,
        "actors": 1,
        "plan": p.to_dict(),
        "udf_calls": calls,
        "cluster": p.cluster,
    }
    fitted = costs_from_report(report)
    assert fitted.delivered_rows_per_call == pytest.approx(5.0)
    assert any("fragments" in n for n in fitted.notes)
    predicted = simulate(p, costs=fitted)
    assert predicted.batches == pytest.approx(400, rel=0.05)
    # The same costs at another batch size still get fragments: the upstream pieces do not grow with B.
    assert simulate(replace(p, batch_size=256), costs=fitted).batches == pytest.approx(400, rel=0.05)
    # A run of full batches leaves the field unset.
    truth = Costs(seconds_per_row=0.001, seconds_per_batch=0.01, dispatch_s=0.002, task_overhead_s=0.1)
    small = plan(profile_numbers(900, 100), cluster, concurrency=1, batch_size=50)
    assert costs_from_report(_report_from_schedule(small, truth)).delivered_rows_per_call is None


def test_calibration_from_an_incomplete_report_says_so() -> None:
    truth = Costs(seconds_per_row=0.001, seconds_per_batch=0.01, dispatch_s=0.002, task_overhead_s=0.1)
    small = plan(profile_numbers(900, 100), ClusterSpec(nodes=1, cpus_per_node=1), concurrency=1, batch_size=50)
    report = _report_from_schedule(small, truth)
    assert not any("incomplete" in n for n in costs_from_report(report).notes)
    report["measurement_incomplete"] = ["at least 3 UDF call record(s) never reached the driver"]
    notes = costs_from_report(report).notes
    assert any("measurement was incomplete: at least 3 UDF call record(s)" in n for n in notes)
