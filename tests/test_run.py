"""run() for real: on the shared Ray cluster in-process, on the native runner through the CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from dataclasses import replace

import pytest

from daftscale.cluster import ClusterSpec
from daftscale.errors import RunError
from daftscale.plan import plan
from daftscale.profile import profile_numbers
from daftscale.run import run

pytestmark = pytest.mark.ray

DAFTSCALE = [sys.executable, "-m", "daftscale.cli"]

PIPELINE = """
    import time
    import daft, daftscale

    class Model:
        def __call__(self, xs: list[int]) -> list[int]:
            time.sleep({fixed} + {per_row} * len(xs))  # a synthetic model: fixed + per-row cost
            return [x + 1 for x in xs]

    @daftscale.pipeline(batch_size={batch}, concurrency={concurrency})
    def build(plan):
        df = daft.from_pydict({{"x": list(range({rows}))}})
        df = plan.apply(df)
        model = plan.udf(Model, return_dtype=daft.DataType.int64())
        return df.with_column("y", model(df["x"]))

    if __name__ == "__main__":
        build.main()
"""


def _pipeline(tmp_path, *, rows=400, batch=16, concurrency=2, fixed=0.005, per_row=0.0, name="pipe.py") -> str:
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(PIPELINE).format(rows=rows, batch=batch, concurrency=concurrency, fixed=fixed, per_row=per_row)
    )
    return str(path)


@pytest.mark.parametrize("strategy", ["shuffle", "streaming"])
def test_rows_in_equal_rows_out(tmp_path, strategy: str) -> None:
    report = run(_pipeline(tmp_path), runner="ray", strategy=strategy, progress=False, report_dir=tmp_path / "rep")
    assert report.plan["strategy"] == strategy
    assert report.rows_in == report.rows_out == 400
    assert sum(c["rows"] for c in report.udf_calls) == 400
    assert report.batches == len(report.udf_calls) >= 400 // 16
    assert report.partitions >= 1 and report.nodes == 2
    assert 0 < report.actor_utilization <= 1
    assert set(report.node_peak_memory_bytes) and report.peak_memory_bytes > 0
    # Every actor that ran a call recorded its start-up, and built the model before its first call.
    starts = {a["actor"]: a for a in report.actor_starts}
    assert set(starts) == {c["actor"] for c in report.udf_calls} and len(starts) == 2
    assert all(0 <= a["spawned"] <= a["start"] <= a["end"] for a in starts.values())
    # Start-up ends inside the run, and no later than the last actor's first call (each built its model first).
    first_calls = {a: min(c["start"] for c in report.udf_calls if c["actor"] == a) for a in starts}
    assert 0 < report.actor_startup_s <= max(first_calls.values()) + 1e-3 <= report.wall_s
    for call in report.udf_calls:
        assert call["start"] >= starts[call["actor"]]["end"] - 1e-3
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["runner"] == "ray" and data["rows_out"] == 400
    assert len(data["actor_starts"]) == 2 and data["actor_startup_s"] > 0
    with pytest.raises(RunError, match="--overwrite"):
        run(_pipeline(tmp_path), runner="ray", progress=False, report_dir=tmp_path / "rep")


def test_bad_plan_shows_in_utilization(tmp_path) -> None:
    """One partition feeding four actors leaves the other node's actors idle; a spread plan does not.

    A figure taken from the plan instead of the measured intervals could not tell the two apart.
    """
    path = _pipeline(tmp_path, rows=960, batch=24, concurrency=4, fixed=0.1)
    # 40 calls of 100 ms: enough work per actor that scheduling noise on 2 cores does not swamp the gap.
    base = plan(profile_numbers(960, 8), ClusterSpec(nodes=2, cpus_per_node=2), concurrency=4, batch_size=24)
    # Partitions only (no into_batches task lever): one task means one node's actors get every batch.
    bad_plan = replace(base, partitions=1, partition_op="into_partitions", into_batches=None)
    spread_plan = replace(base, partitions=8, partition_op="into_partitions", into_batches=None)
    bad = run(path, runner="ray", plan=bad_plan, progress=False)
    spread = run(path, runner="ray", plan=spread_plan, progress=False)
    for report in (bad, spread):
        assert report.rows_in == report.rows_out == 960
        busy = sum(c["end"] - c["start"] for c in report.udf_calls)
        assert busy >= 0.1 * report.batches  # every interval holds the model's real sleep
    assert bad.actors_used <= 2 < spread.actors_used
    # Two of the four actors never ran in the bad plan, and an idle actor counts as idle: at most about half.
    assert bad.actor_utilization <= 0.55
    # A figure taken from the plan would read the same for both. The gap is not asserted as a fixed margin:
    # on a loaded 2-core machine actor start-up staggers and the spread run's window stretches, so the
    # measured gap was 0.14 on one loaded suite run and above 0.15 on the others; what must hold is the
    # order, with a clear step.
    assert spread.actor_utilization > bad.actor_utilization + 0.05


def test_a_limit_before_the_scaling_step_runs_an_into_partitions_plan(tmp_path) -> None:
    # Daft 0.7.26's Ray runner never finishes into_partitions after a limit (a user's `.limit(n)` to try a
    # pipeline on a few rows): plan.apply repartitions there instead, so the run finishes.
    path = tmp_path / "limited.py"
    path.write_text(textwrap.dedent(PIPELINE).format(rows=2_000, batch=16, concurrency=2, fixed=0.001, per_row=0.0))
    path.write_text(path.read_text().replace("list(range(2000))})", "list(range(2000))}).limit(300)"))
    assert ".limit(300)" in path.read_text()
    base = plan(profile_numbers(300, 8), ClusterSpec(nodes=2, cpus_per_node=2), concurrency=2, batch_size=16)
    coalescing = replace(base, partitions=3, partition_op="into_partitions", into_batches=None)
    report = run(str(path), runner="ray", plan=coalescing, progress=False, stall_timeout=20)
    assert report.rows_in == report.rows_out == 300 and sum(c["rows"] for c in report.udf_calls) == 300


GROUPED = """
    import time
    import daft, daftscale

    class Model:
        def __call__(self, xs: list[int]) -> list[int]:
            time.sleep(0.002)  # a synthetic model: fixed cost per call
            return [x % 3 for x in xs]

    @daftscale.pipeline(batch_size=16, concurrency=2)
    def build(plan):
        df = plan.apply(daft.read_parquet({files!r}))
        model = plan.udf(Model, return_dtype=daft.DataType.int64())
        df = df.with_column("label", model(df["x"]))
        return df.groupby("label").agg(daft.col("x").count().alias("n"))
"""


def test_a_groupby_after_the_udf_gets_a_shuffle_sized_to_the_cluster(tmp_path) -> None:
    # 24 files feed the groupby after the UDF: Daft's own setting would shuffle 3 labels into 24 partitions,
    # one per file; the run's plan sizes it to the cluster's 4 task slots, and the run still counts right.
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for i in range(24):
        files.append(str(tmp_path / f"part-{i:02d}.parquet"))
        pq.write_table(pa.table({"x": list(range(i * 10, i * 10 + 10))}), files[-1])
    path = tmp_path / "grouped.py"
    path.write_text(textwrap.dedent(GROUPED).format(files=files))
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and report.rows_out == 3 and sum(c["rows"] for c in report.udf_calls) == 240
    assert report.plan["execution_config"]["shuffle_aggregation_default_partitions"] == 4
    assert any("A groupby after the UDF shuffles into 4 partitions" in step for step in report.plan["steps"])
    assert "groupby shuffle 4 partitions" in dict(report.summary())["plan"]


TINY_FILES = """
    import time
    import daft, daftscale

    class Model:
        def __call__(self, xs: list[int]) -> list[int]:
            time.sleep(0.002)  # a synthetic model: fixed cost per call
            return [x + 1 for x in xs]

    @daftscale.pipeline(batch_size=16, concurrency=2)
    def build(plan):
        df = plan.apply({read})
        model = plan.udf(Model, return_dtype=daft.DataType.int64())
        return df.with_column("y", model(df["x"]))
"""


def _tiny_files(tmp_path, count: int) -> list[str]:
    """``count`` Parquet files of 10 rows each (``x`` numbers them, ``key`` is x's file mod 4)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = []
    for i in range(count):
        files.append(str(tmp_path / f"part-{i:02d}.parquet"))
        pq.write_table(pa.table({"x": list(range(i * 10, i * 10 + 10)), "key": [i % 4] * 10}), files[-1])
    return files


def test_many_tiny_files_are_read_in_merged_tasks_with_or_without_a_scaling_step(tmp_path) -> None:
    # 40 files of 10 rows for the cluster's 4 task slots: Daft's default reads them in 40 tasks. The plan's
    # execution setting merges them into about 8 (Daft's scan-task merge), and it holds with no scaling step.
    import daft

    files = _tiny_files(tmp_path, 40)
    path = tmp_path / "tiny.py"
    path.write_text(textwrap.dedent(TINY_FILES).format(read=f"daft.read_parquet({files!r})"))
    report = run(str(path), runner="ray", progress=False, calibrate="off")
    settings = report.plan["execution_config"]
    assert settings["enable_scan_task_split_and_merge"] is True
    assert report.rows_in == report.rows_out == 400
    assert any("Read the 40 files in about 8 tasks" in step for step in report.plan["steps"])
    assert "small files merged" in dict(report.summary())["plan"]

    # What the setting does on the real runner: fewer read tasks (partitions), the same rows.
    assert len(list(daft.read_parquet(files).iter_partitions())) == 40
    with daft.execution_config_ctx(**settings):
        merged = daft.read_parquet(files).collect()
        assert len(list(merged.iter_partitions())) <= 20, "at most half as many read tasks as files"
    assert sorted(merged.to_pydict()["x"]) == list(range(400))

    # A saved plan that keeps Daft's default partitions still carries the setting, and its run counts the
    # rows in from the footers (no count query).
    saved = {**report.plan, "decision": {"scaling_step": False, "why": "kept for the test"}}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(saved))
    again = run(str(path), runner="ray", plan=str(plan_file), progress=False)
    assert again.plan["execution_config"] == settings
    assert again.rows_in == again.rows_out == 400
    assert again.partitions < 40


def test_many_tiny_files_joined_before_the_scaling_step_are_read_in_merged_tasks(tmp_path) -> None:
    # The scaling step comes after a join, so the plan is not made from the files' footers: the run reads them
    # (the largest read before the step) and merges its 40 files for the sample runs and the run alike.
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = _tiny_files(tmp_path, 40)
    keys = str(tmp_path / "keys.parquet")
    pq.write_table(pa.table({"key": [0, 1, 2, 3], "label": ["a", "b", "c", "d"]}), keys)
    path = tmp_path / "joined.py"
    joined = f"daft.read_parquet({files!r}).join(daft.read_parquet({keys!r}), on='key')"
    path.write_text(textwrap.dedent(TINY_FILES).format(read=joined))

    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and report.rows_in == report.rows_out == 400
    assert report.plan["execution_config"]["enable_scan_task_split_and_merge"] is True
    assert any(step.startswith("Read the 40 files in about 8 tasks") for step in report.plan["steps"])
    # Calibrated (a budget makes it measure a job this small): Daft's default runs on files spread over the
    # read instead of a limit after the join, and the rows at the UDF come out exact from that run's own rows.
    calibrated = run(str(path), runner="ray", progress=False, calibrate=60)
    calibration = calibrated.plan["calibration"]
    assert calibration["sampling"].startswith("files spread over the largest read (about 70 rows at the step)")
    assert calibration["lines"][0].startswith("sample: 70 of 400 rows"), calibration["lines"]
    assert calibration["runs"][0]["name"] == "Daft's default" and calibration["runs"][0]["udf_rows"] == 70
    assert calibration["rows_at_udf"] == 400 and calibrated.rows_out == 400
    # --calibrate off runs the plan as `daftscale plan` makes it, from the scaling input alone.
    off = run(str(path), runner="ray", progress=False, calibrate="off")
    assert off.rows_out == 400 and "enable_scan_task_split_and_merge" not in off.plan["execution_config"]


def test_plan_file_is_used(tmp_path) -> None:
    path = _pipeline(tmp_path, rows=200)
    first = run(path, runner="ray", progress=False)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps({**first.plan, "batch_size": 10}))
    report = run(path, runner="ray", plan=str(plan_file), progress=False)
    assert report.plan["batch_size"] == 10
    assert max(c["rows"] for c in report.udf_calls) <= 10 and report.rows_out == 200


def test_pipeline_options_reach_the_plan_and_run_options_override_them(tmp_path) -> None:
    path = _pipeline(tmp_path, rows=200, batch=16, concurrency=2)  # @daftscale.pipeline(batch_size=16, ...)
    own = run(path, runner="ray", progress=False)
    assert own.plan["batch_size"] == 16 and own.actors == 2
    assert 8 < max(c["rows"] for c in own.udf_calls) <= 16  # over 8: the override below changes the calls
    override = run(path, runner="ray", progress=False, batch_size=8)
    assert override.plan["batch_size"] == 8 and override.actors == 2
    assert max(c["rows"] for c in override.udf_calls) <= 8 and override.rows_out == 200


def test_native_runner_in_a_subprocess(tmp_path) -> None:
    path = _pipeline(tmp_path, rows=300)
    out = tmp_path / "native-report"
    proc = subprocess.run(
        [*DAFTSCALE, "run", path, "--runner", "native", "--report", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["runner"] == "native" and data["rows_in"] == data["rows_out"] == 300
    assert sum(c["rows"] for c in data["udf_calls"]) == 300
    assert 0 < data["actor_utilization"] <= 1 and data["peak_memory_bytes"] > 0
    # Native actors are child processes of the driver: their start-up reaches the report through the spool.
    assert data["actor_starts"] and data["actor_startup_s"] > 0
    assert "actor utilisation" in proc.stdout
    # The same file runs with plain `python pipeline.py` (plan made on the spot).
    proc = subprocess.run([sys.executable, path, "--no-progress"], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "300 → 300" in proc.stdout


def test_demo_native_in_a_subprocess(tmp_path) -> None:
    out = tmp_path / "demo-report"
    proc = subprocess.run(
        [*DAFTSCALE, "demo", "--rows", "400", "--report", str(out)], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    assert "synthetic stand-in for a GPU model call" in proc.stdout
    assert (out / "report.html").exists() and json.loads((out / "report.json").read_text())["rows_out"] == 400


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "missing.py"], "does not exist"),
        (["run", "{pipe}", "--ray-address", "127.0.0.1:1"], "does not answer"),
        (["run", "{pipe}", "--local-cluster", "2by2"], "malformed --local-cluster"),
        (["run", "{bad}"], "defines no pipeline"),
        (["demo", "--rows", "0"], "rows must be a positive integer"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args: list[str], message: str) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    pipe = _pipeline(tmp_path)
    argv = [a.format(pipe=pipe, bad=bad) for a in args]
    proc = subprocess.run([*DAFTSCALE, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_a_sessions_runs_share_its_measuring_actors_and_keep_their_records_apart(tmp_path, monkeypatch) -> None:
    """On a cluster of several hosts the collector and the node memory samplers are Ray actors started by a
    session's first run and kept for the next (calibration's samples, the run, the tuner's trials): each
    run still counts only its own calls and measures its own memory, and the actors end with the session.
    The test cluster is one host, so the actors are asked for (DAFTSCALE_RAY_INSTRUMENTS=actors)."""
    import ray

    from daftscale.memory import RAY_INSTRUMENTS_ENV
    from daftscale.run import Session

    monkeypatch.setenv(RAY_INSTRUMENTS_ENV, "actors")
    path = _pipeline(tmp_path, rows=120, batch=20)
    with Session("ray") as session:
        first = session.execute(path, calibrate="off")
        kept = session.instruments
        assert kept is not None
        second = session.execute(path, calibrate="off")
        assert session.instruments is kept
        # A kept collector that dies (its node lost, say) is replaced by the next run, not read in vain.
        ray.kill(ray.get_actor(kept.collector.name, namespace="daftscale"))
        _until_gone(kept.collector.name)  # ray.kill is asynchronous: the next run must see it dead
        third = session.execute(path, calibrate="off")
        assert session.instruments is not kept and session.instruments is not None
        collector_name = session.instruments.collector.name
    for report in (first, second, third):
        assert report.rows_in == report.rows_out == 120
        assert sum(c["rows"] for c in report.udf_calls) == 120  # not the other run's calls too
        assert report.peak_memory_bytes > 0 and set(report.node_peak_memory_bytes)
    # Daft starts a pool of UDF actors per query: the second run's calls are all its own actors'.
    assert not {c["actor"] for c in first.udf_calls} & {c["actor"] for c in second.udf_calls}
    assert third.rows_out == 120 and not third.udf_errors
    assert session.instruments is None
    _until_gone(collector_name)


def test_a_cluster_on_this_host_is_measured_without_ray_actors(tmp_path) -> None:
    """Every node of the test cluster runs on this host: a run's records go through a spool directory and
    each node's memory is sampled by a thread of the driver, so no measuring actor (a Ray worker process
    each, about 1.1 s of a fresh run on 2 cores) competes with the query. Calls still name their Ray node
    and actor, so they line up with the nodes' memory, as the actors' measurements do."""
    import ray

    from daftscale.memory import host_raylets
    from daftscale.run import Session

    raylets = host_raylets()
    alive = {node["NodeID"][:8] for node in ray.nodes() if node.get("Alive")}
    assert raylets is not None and set(raylets) == alive
    path = _pipeline(tmp_path, rows=120, batch=20)
    with Session("ray") as session:
        report = session.execute(path, calibrate="off")
        assert session.instruments is None
        assert not [a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == "daftscale"]
    assert report.rows_in == report.rows_out == 120 and sum(c["rows"] for c in report.udf_calls) == 120
    assert not report.records_dropped and not report.measurement_incomplete
    call_nodes = {c["node"] for c in report.udf_calls}
    assert call_nodes <= alive  # Ray's node ids, not the host name
    assert set(report.node_peak_memory_bytes) == alive
    assert all(report.node_peak_memory_bytes[node] for node in call_nodes)
    assert {len(c["actor"]) for c in report.udf_calls} == {8}  # Ray actor ids, as on a cluster of several hosts


def _until_gone(actor_name: str) -> None:
    """Wait until Ray has marked a killed actor dead: ray.kill is asynchronous, and the name is free only then."""
    import ray

    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            ray.get_actor(actor_name, namespace="daftscale")
        except ValueError:
            return
        time.sleep(0.2)
    raise AssertionError(f"actor {actor_name} outlived its kill by 30 s")
