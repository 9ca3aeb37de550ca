"""Issue 7: bad input gets one clear line, faults during a run end in every row or a clear failure.

Bad input goes through the CLI in-process (``cli.main``: nothing reaches a runner, so it is fast);
faults are injected for real on the shared 2-node Ray cluster (a UDF that raises, a UDF actor killed
by pid), and Ctrl-C goes to a real ``daftscale run --local-cluster`` subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import replace
from typing import Any

import daft
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
import ray.cloudpickle
from daft.pickle import cloudpickle as daft_cloudpickle

from daftscale.cli import main
from daftscale.cluster import ClusterSpec
from daftscale.errors import RunError
from daftscale.plan import plan
from daftscale.profile import profile_numbers
from daftscale.run import run
from daftscale.udf import RayCollector, SpoolCollector, actor_udf, recording

pytestmark = pytest.mark.ray

# Ray workers cannot import this module, so its classes travel by value (as a pipeline file's do).
daft_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

DAFTSCALE = [sys.executable, "-m", "daftscale.cli"]

# The CLI as a terminal user starts it, with Ctrl-C's default action. A shell's background job (`make
# test &`, some CI runners) starts with SIGINT ignored, children inherit that, and Python then leaves it
# ignored: the run would rightly carry on through the signal.
DAFTSCALE_WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "from daftscale.cli import main; sys.exit(main(sys.argv[1:]))",
]

PIPELINE = """
    import time
    import daft, daftscale

    class Model:
        def __call__(self, ids: list[int]) -> list[int]:
            time.sleep({sleep})
            if {bad} in ids:
                raise ValueError("bad row {bad}")
            return ids

    @daftscale.pipeline(batch_size={batch}, concurrency=2)
    def build(plan):
        df = daft.from_pydict({{"id": list(range({rows}))}})
        df = plan.apply(df)
        df = df.with_column("out", plan.udf(Model, return_dtype=daft.DataType.int64())(df["id"]))
        return {ret}

    if __name__ == "__main__":
        build.main()
"""


def _pipeline(tmp_path, *, rows=200, batch=10, bad=-1, sleep=0.0, ret="df", name="pipe.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(PIPELINE).format(rows=rows, batch=batch, bad=bad, sleep=sleep, ret=ret))
    return str(path)


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


# ---------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, before anything starts


@pytest.fixture
def bad_inputs(tmp_path):
    """Files for the bad-input table: each is wrong in one way."""
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "empty.py").write_text("")
    (tmp_path / "boom.py").write_text("import daft\nraise RuntimeError('no GPU here')\n")
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "notjson.json").write_text("strategy: shuffle")
    (tmp_path / "has-report").mkdir()
    (tmp_path / "has-report" / "report.json").write_text("{}")
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "text.parquet").write_text("not parquet at all")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), good)
    (tmp_path / "corrupt.parquet").write_bytes(good.read_bytes()[:-12] + b"\x00" * 8 + b"PAR1")
    pq.write_table(pa.table({"x": pa.array([], pa.int64())}), tmp_path / "zero.parquet")
    return tmp_path


BAD_INPUT = [
    # (argv, words the one line must hold)
    (["run", "{d}/missing.py"], "does not exist"),
    (["run", "{d}/emptydir"], "is a directory"),
    (["run", "{d}/empty.py"], "defines no pipeline"),
    (["run", "{d}/boom.py"], "failed to import: RuntimeError: no GPU here"),
    (["run", "{d}/pipe.py", "--plan", "{d}/missing.json"], "does not exist"),
    (["run", "{d}/pipe.py", "--plan", "{d}/emptydir"], "is a directory"),
    (["run", "{d}/pipe.py", "--plan", "{d}/empty.json"], "is empty"),
    (["run", "{d}/pipe.py", "--plan", "{d}/list.json"], "not a daftscale plan"),
    (["run", "{d}/pipe.py", "--plan", "{d}/notjson.json"], "not JSON"),
    (["run", "{d}/pipe.py", "--plan", "{d}/list.json", "--batch-size", "8"], "cannot be combined"),
    (["run", "{d}/pipe.py", "--batch-size", "0"], "--batch-size must be a positive integer"),
    (["run", "{d}/pipe.py", "--concurrency", "-3"], "--concurrency must be a positive integer"),
    (["run", "{d}/pipe.py", "--batches-per-task", "0"], "--batches-per-task must be a positive integer"),
    (["run", "{d}/pipe.py", "--max-memory", "12 parsecs"], "malformed memory size for --max-memory"),
    (["run", "{d}/pipe.py", "--max-memory", "0"], "--max-memory must be a positive size"),
    (["run", "{d}/pipe.py", "--udf-memory", "lots"], "malformed memory size for --udf-memory"),
    (["run", "{d}/pipe.py", "--local-cluster", "0x2"], "at least 1 node"),
    (["run", "{d}/pipe.py", "--report", "{d}/has-report"], "--overwrite"),
    (["run", "{d}/pipe.py", "--report", "{d}/a-file"], "is a file"),
    (["run", "{d}/pipe.py", "--on-error", "retry"], "--on-error"),
    (["plan", "{d}/missing.parquet"], "missing.parquet"),
    (["plan", "{d}/emptydir"], "emptydir"),
    (["plan", "{d}/text.parquet"], "text.parquet"),
    (["plan", "{d}/corrupt.parquet"], "corrupt.parquet"),
    (["plan", "{d}/zero.parquet"], "zero rows"),
    (["plan", "--rows", "100", "--nodes", "0"], "--nodes must be a positive integer"),
    (["plan", "--rows", "100", "--memory-per-node", "64 GiBs"], "malformed memory size"),
]


@pytest.mark.parametrize(("args", "words"), BAD_INPUT, ids=[" ".join(a[1:]).replace("{d}/", "") for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_exit_2(bad_inputs, capsys, args: list[str], words: str) -> None:
    _pipeline(bad_inputs)
    code, err = _cli(capsys, [a.format(d=bad_inputs) for a in args])
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("daftscale: error: "), err
    assert words in err
    # Names the fix, not just the problem: every message has a "problem: fix" part after the prefix.
    assert ":" in err.removeprefix("daftscale: error: "), err
    assert not (bad_inputs / "has-report" / "report.html").exists()


def test_build_returning_no_dataframe(tmp_path, capsys) -> None:
    path = _pipeline(tmp_path, ret="None")
    code, err = _cli(capsys, ["run", path, "--runner", "ray", "--no-progress"])
    assert code == 2 and "not a daft.DataFrame" in err and len(err.splitlines()) == 1


def test_unreachable_ray_address_fails_fast(tmp_path) -> None:
    # A subprocess: this test process is already on Ray, which would skip the address check.
    start = time.time()
    proc = subprocess.run(
        [*DAFTSCALE, "run", _pipeline(tmp_path), "--ray-address", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "does not answer" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert time.time() - start < 30


# ---------------------------------------------------------------------------------------------------
# Plan files made elsewhere


def test_plan_for_another_cluster_shape_is_refused(tmp_path) -> None:
    path = _pipeline(tmp_path)
    other = plan(profile_numbers(200, 8), ClusterSpec(nodes=4, cpus_per_node=8), concurrency=2, batch_size=10)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(other.to_json())
    with pytest.raises(RunError, match=r"4 nodes × 8 CPUs.*this cluster is 2 nodes × 2 CPUs.*--force-plan"):
        run(path, runner="ray", plan=str(plan_file), progress=False)
    report = run(path, runner="ray", plan=str(plan_file), progress=False, force_plan=True)
    assert report.rows_in == report.rows_out == 200 and report.status == "ok"


def test_plan_that_runs_out_of_memory_here_is_refused() -> None:
    here = ClusterSpec(nodes=2, cpus_per_node=2, memory_per_node=1 << 30)
    # 2,000 rows of 1 MB in one partition: about 6 GiB on a node of 1 GiB.
    fat = plan(profile_numbers(2000, 1_000_000), here, concurrency=2, batch_size=10, strategy="shuffle")
    fat = replace(fat, partitions=1, partition_op="into_partitions")
    from daftscale.run import check_plan_fits

    with pytest.raises(RunError, match=r"run out of memory.*--force-plan"):
        check_plan_fits(fat, here)
    check_plan_fits(fat, here, force=True)


# ---------------------------------------------------------------------------------------------------
# A UDF that raises on some rows


def test_udf_error_with_raise_fails_with_one_line(tmp_path) -> None:
    path = _pipeline(tmp_path, bad=13)
    with pytest.raises(RunError) as info:
        run(path, runner="ray", progress=False, report_dir=tmp_path / "rep", on_error="raise")
    message = str(info.value)
    assert "ValueError: bad row 13" in message and "--on-error log" in message
    assert "\n" not in message and len(message) < 600
    assert not (tmp_path / "rep" / "report.json").exists()


@pytest.mark.parametrize("mode", ["log", "ignore"])
def test_udf_error_with_log_nulls_the_batch_and_counts_it(tmp_path, mode: str) -> None:
    path = _pipeline(tmp_path, bad=13, batch=10)
    report = run(path, runner="ray", progress=False, report_dir=tmp_path / "rep", on_error=mode, strategy="streaming")
    # Daft 0.7.26 nulls the whole batch whose call raised (10 rows here), and keeps every row.
    assert report.rows_in == report.rows_out == 200 and report.status == "ok"
    assert 1 <= report.rows_failed <= 10
    assert report.udf_errors == ["ValueError: bad row 13"]
    assert sum(c["rows"] for c in report.udf_calls) == 200 - report.rows_failed
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["rows_failed"] == report.rows_failed and data["status"] == "ok"


def test_nulls_are_exactly_the_failed_rows() -> None:
    """What run() counts is what Daft did: the rows of the failed batch, and only those, are null."""
    collector = RayCollector()
    try:
        with recording({**collector.sink, "on_error": "ignore"}):
            model = actor_udf(Flaky, _plan(2, 10), return_dtype=daft.DataType.int64())
        df = daft.from_pydict({"id": list(range(200))}).into_partitions(4)
        out = df.with_column("y", model(df["id"])).to_pydict()
        collector.snapshot()
        failed = collector.failed
    finally:
        collector.close()
    nulls = [i for i, y in zip(out["id"], out["y"], strict=True) if y is None]
    assert sorted(out["id"]) == list(range(200))
    assert len(failed) == 1 and 13 in nulls and len(nulls) == failed[0]["rows"]


class Flaky:
    def __call__(self, ids: list[int]) -> list[int]:
        if 13 in ids:
            raise ValueError("bad row 13")
        return ids


def _plan(concurrency: int, batch_size: int):
    return plan(
        profile_numbers(200, 8), ClusterSpec(nodes=2, cpus_per_node=2), concurrency=concurrency, batch_size=batch_size
    )


# ---------------------------------------------------------------------------------------------------
# A UDF actor killed mid-run


class Slow:
    def __call__(self, ids: list[int]) -> list[int]:
        time.sleep(0.05)
        return ids


def _kill_first_actor_after(
    collector: RayCollector | SpoolCollector,
    calls_done: int,
    killed: list[int],
    errors: list[BaseException] | None = None,
) -> threading.Thread:
    """SIGKILL the process of the actor that made the first recorded call, once ``calls_done`` calls ended."""

    errors = [] if errors is None else errors

    def kill() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                calls, _ = collector.snapshot()
            except Exception as exc:  # the collector actor may still be starting: try again
                errors.append(exc)
                time.sleep(0.1)
                continue
            if len(calls) >= calls_done:
                pid = calls[0]["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_killed_udf_actor_every_row_exactly_once() -> None:
    collector = RayCollector()
    killed: list[int] = []
    try:
        with recording(collector.sink):
            model = actor_udf(Slow, _plan(2, 10), return_dtype=daft.DataType.int64())
        df = daft.from_pydict({"id": list(range(600))}).into_partitions(6)
        df = df.with_column("y", model(df["id"]))
        killer = _kill_first_actor_after(collector, 8, killed)
        out = df.to_pydict()
        killer.join(5)
        calls, _ = collector.snapshot()
    finally:
        collector.close()
    assert killed, "the actor was never killed"
    assert not psutil.pid_exists(killed[0]) or psutil.Process(killed[0]).status() == psutil.STATUS_ZOMBIE
    # Ray restarted the actor and retried its in-flight call: every id once, nothing null.
    assert sorted(out["id"]) == list(range(600)) and sorted(out["y"]) == list(range(600))
    assert len({c["pid"] for c in calls}) >= 3  # two actors plus the restarted one


@pytest.mark.slow
def test_killed_udf_actor_run_reports_every_row(tmp_path, monkeypatch) -> None:
    path = _pipeline(tmp_path, rows=600, batch=10, sleep=0.05)
    killed: list[int] = []
    errors: list[BaseException] = []
    # Measured execution (daftscale.execution) makes the run's collector.
    run_module = sys.modules["daftscale.execution"]
    original = run_module.make_collector

    def make_and_watch(runner: str, **how: Any) -> RayCollector | SpoolCollector:
        # The run's own collector: its records carry the UDF actors' pids, as an operator would use them.
        collector = original(runner, **how)
        _kill_first_actor_after(collector, 8, killed, errors)
        return collector

    monkeypatch.setattr(run_module, "make_collector", make_and_watch)
    # Calibration off: its sample runs would each make a collector too, and the killer must watch the run's.
    report = run(path, runner="ray", progress=False, strategy="shuffle", calibrate="off")
    assert killed, errors
    assert report.rows_in == report.rows_out == 600 and report.status == "ok"


# ---------------------------------------------------------------------------------------------------
# Short output, memory budget


def test_short_output_is_a_run_error(tmp_path) -> None:
    path = _pipeline(tmp_path, ret='df.where(df["id"] % 2 == 0)')
    # A filter after the scaling step: not checked by default, so the run succeeds with half the rows.
    assert run(path, runner="ray", progress=False).rows_out == 100
    with pytest.raises(RunError, match=r"produced 100 rows from 200.*rows were lost"):
        run(path, runner="ray", progress=False, check_rows=True, report_dir=tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["status"] == "failed: rows lost" and data["rows_out"] == 100


def test_memory_budget_stops_the_run_with_a_partial_report(tmp_path) -> None:
    # Calls of 0.2 s, so the query is still running when the first memory check (0.5 s in) stops it;
    # calibrate off: the run checked is the one under the budget (a calibration sample runs without it).
    path = _pipeline(tmp_path, rows=400, batch=10, sleep=0.2)
    start = time.time()
    with pytest.raises(RunError, match=r"memory budget exceeded: node \w+ reached .* over --max-memory 1.0 MiB"):
        run(path, runner="ray", progress=False, max_memory="1MiB", report_dir=tmp_path / "rep", calibrate="off")
    assert time.time() - start < 60
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["status"] == "stopped: memory budget" and data["rows_out"] < data["rows_in"] == 400
    assert data["peak_memory_bytes"] > 1 << 20
    # The cluster is still usable after the stop.
    assert run(path, runner="ray", progress=False).rows_out == 400


# ---------------------------------------------------------------------------------------------------
# Ctrl-C


def _ray_sessions() -> set[str]:
    root = "/tmp/ray"
    return {d for d in os.listdir(root) if d.startswith("session_2")} if os.path.isdir(root) else set()


def _processes_of(session: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any(session in part for part in proc.info["cmdline"] or ()):
                found.append(proc.info["pid"])
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_its_cluster(tmp_path) -> None:
    # 600 calls of 50 ms on 2 actors: 15 s of work, so the run is still going when SIGINT comes right after
    # the first call. Each call touches a marker file (the sleep's argument is an expression), so the test
    # waits for the actors to be working instead of a fixed time a loaded machine may not keep to.
    marker = tmp_path / "called"
    path = _pipeline(tmp_path, rows=6000, batch=10, sleep=f"0.05 + (open({str(marker)!r}, 'a').close() or 0)")
    before = _ray_sessions()
    proc = subprocess.Popen(
        [
            *DAFTSCALE_WITH_CTRL_C,
            "run",
            path,
            "--local-cluster",
            "2x1",
            "--report",
            str(tmp_path / "rep"),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 90
        session = None
        while time.time() < deadline and session is None:
            new = _ray_sessions() - before
            session = next(iter(new), None)
            time.sleep(0.2)
        assert session, "the run never started its local cluster"
        deadline = time.time() + 120  # generous: a loaded 2-core machine starts a cluster and actors slowly
        while not marker.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), "the run's UDF actors never got a batch"
        assert _processes_of(session)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err
    deadline = time.time() + 20
    while _processes_of(session) and time.time() < deadline:
        time.sleep(0.5)
    assert not _processes_of(session), "processes of the run's Ray cluster outlived it"
    # An interrupted run writes no report (half a run must not read as one), and leaves no temporary files.
    assert not (tmp_path / "rep" / "report.json").exists()
    assert list(tmp_path.glob("rep/.*.tmp")) == []


# ---------------------------------------------------------------------------------------------------
# Joining a live cluster, tearing down a started one


@pytest.mark.slow
def test_ray_address_joins_a_live_cluster_and_leaves_it_running(tmp_path, ray_cluster) -> None:
    path = _pipeline(tmp_path, rows=100)
    argv = ["run", path, "--ray-address", ray_cluster.address, "--report", str(tmp_path / "rep"), "--no-progress"]
    proc = subprocess.run(
        [*DAFTSCALE, *argv],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    # It ran on the shared cluster (its 2 nodes), not on one of its own.
    assert data["runner"] == "ray" and data["nodes"] == 2 and data["rows_out"] == 100
    assert {c["node"] for c in data["udf_calls"]} <= {n["NodeID"][:8] for n in ray.nodes()}
    # A cluster the run joined is not the run's to shut down: it still answers, with every node.
    assert sum(1 for n in ray.nodes() if n["Alive"]) == 2
    assert run(path, runner="ray", progress=False).rows_out == 100


@pytest.mark.slow
def test_local_cluster_is_torn_down_after_a_normal_run(tmp_path) -> None:
    path = _pipeline(tmp_path, rows=100)
    # Its own Ray temp directory (short: Ray's socket paths must fit 107 bytes), so other Ray clusters on
    # this machine cannot be taken for the run's.
    ray_tmp = tempfile.mkdtemp(prefix="dsrt", dir="/tmp")
    try:
        argv = ["run", path, "--local-cluster", "2x1", "--no-progress"]
        env = {**os.environ, "RAY_TMPDIR": ray_tmp}
        proc = subprocess.run([*DAFTSCALE, *argv], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "100 → 100" in proc.stdout
        sessions = [d for d in os.listdir(os.path.join(ray_tmp, "ray")) if d.startswith("session_2")]
        assert len(sessions) == 1, sessions  # the run started its own cluster...
        deadline = time.time() + 30  # ...and stopped it on the way out (Ray's processes take a moment to exit)
        while _processes_of(sessions[0]) and time.time() < deadline:
            time.sleep(0.5)
        assert not _processes_of(sessions[0]), "processes of the run's Ray cluster outlived a normal run"
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
