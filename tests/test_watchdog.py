"""Issue 16: a run that stops making progress ends with exit 2, a partial report and nothing left running.

The adaptive limit and the watch's bookkeeping are pure and tested directly (the clock injected). The
stalls are real: ``daftscale run`` in a subprocess, a model that stops answering after a few calls
(it waits on an Event that never fires, as a stuck lock or a wedged GPU would), on Daft's native
runner (the UDF in a worker process, and in a thread of the driver as Daft does for image columns)
and on a local Ray cluster started for the run. Synthetic UDFs (``sleep``) stand in for the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import daft
import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st

from daftscale.cluster import ClusterSpec
from daftscale.config import DEFAULT_STALL_TIMEOUT_S, STALL_CALL_FACTOR
from daftscale.errors import ConfigError, RunError
from daftscale.plan import plan
from daftscale.profile import profile_numbers
from daftscale.udf import actor_udf, recording
from daftscale.watchdog import (
    PREP_STALL_FACTOR,
    StallWatch,
    actor_states,
    bounded_prep,
    combine,
    resolve_stall_timeout,
    stall_limit,
)

DAFTSCALE = [sys.executable, "-m", "daftscale.cli"]
SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")

PIPELINE = """
    import threading, time
    import daft, numpy as np, daftscale

    class Model:
        def __init__(self):
            self.calls = 0

        def __call__(self, values: list) -> list[int]:
            self.calls += 1
            if self.calls > {answer}:
                threading.Event().wait()  # stops answering: a stuck lock, a wedged GPU
            time.sleep({sleep})
            return [0] * len(values)

    @daftscale.pipeline(batch_size={batch}, concurrency={actors})
    def build(plan):
        data = {{"id": list(range({rows}))}}
        if {images}:
            data["img"] = [np.zeros((4, 4, 3), np.uint8)] * {rows}
        df = plan.apply(daft.from_pydict(data))
        column = df["id"]
        if {images}:
            # An image column: Daft 0.7 runs the actor UDF in a thread of the driver, not a worker process.
            column = df["img"].cast(daft.DataType.image("RGB"))
        return df.with_column("out", plan.udf(Model, return_dtype=daft.DataType.int64())(column))
"""


def _pipeline(tmp_path, *, answer=3, sleep=0.02, batch=10, actors=2, rows=400, images=False) -> str:
    path = tmp_path / "pipe.py"
    text = PIPELINE.format(answer=answer, sleep=sleep, batch=batch, actors=actors, rows=rows, images=images)
    path.write_text(textwrap.dedent(text))
    return str(path)


def _run_cli(args: list[str], marker: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    # The marker travels in the environment to every process the run starts (Daft's UDF workers copy it),
    # so the test can find any it left behind without touching other runs on this machine.
    env = {
        **os.environ,
        "DAFTSCALE_TEST_RUN": marker,
        "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    return subprocess.run([*DAFTSCALE, *args], capture_output=True, text=True, timeout=timeout, env=env)


def _processes_with(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.environ().get("DAFTSCALE_TEST_RUN") == marker:
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def _read_report(directory) -> dict:
    return json.loads((directory / "report.json").read_text())


# ---------------------------------------------------------------------------------------------------
# The adaptive limit


def test_limit_examples() -> None:
    assert stall_limit(60, []) == STALL_CALL_FACTOR * 60  # nothing seen: room for a slow first call
    assert stall_limit(60, [0.1, 0.2]) == 60  # fast calls: the floor
    assert stall_limit(1, [3.0]) == STALL_CALL_FACTOR * 3.0  # a 3 s model is not stalled after 1 s


@given(
    floor=st.floats(0.1, 1e4),
    calls=st.lists(st.floats(0, 1e4), max_size=20),
    more=st.floats(0, 1e4),
)
def test_limit_properties(floor: float, calls: list[float], more: float) -> None:
    limit = stall_limit(floor, calls)
    assert limit >= floor  # never below the floor
    if calls:
        assert limit >= STALL_CALL_FACTOR * max(calls) - 1e-9  # never cuts a call as long as one seen
        assert stall_limit(floor, [*calls, more]) >= limit  # seeing more calls never shortens it


def test_resolve_stall_timeout() -> None:
    assert resolve_stall_timeout(None) == DEFAULT_STALL_TIMEOUT_S
    assert resolve_stall_timeout("0") is None  # off
    for bad in ("soon", -1, float("nan")):
        with pytest.raises(ConfigError, match="--stall-timeout must be a number of seconds"):
            resolve_stall_timeout(bad)


class _Records:
    """Call records as daftscale's collectors hand them over (finished, running; ready and failed)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.running: list[dict] = []
        self.ready: list[dict] = []
        self.failed: list[dict] = []

    def snapshot(self):
        return list(self.calls), list(self.running)


def test_watch_fires_only_after_the_limit_without_progress() -> None:
    now = [100.0]
    records = _Records()
    watch = StallWatch(records, 2.0, started=100.0, concurrency=2, clock=lambda: now[0])
    now[0] = 109.0  # before any call: the limit is 5 × 2 s
    assert watch() is None
    now[0] = 111.0
    assert "no UDF actor of 2 became ready" in (watch() or "")

    # One actor of two ready, its calls take 0.5 s: the other may still be starting, so 5 × 2 s holds.
    records.ready = [{"actor": "a", "node": "n", "start": 100.0, "end": 101.0}]
    records.calls = [{"actor": "a", "node": "n", "start": 101.0, "end": 101.5, "rows": 10}]
    now[0] = 110.0
    assert watch() is None and watch.limit_s == 10.0
    watch.concurrency = 1
    records.calls = [{"actor": "a", "node": "n", "start": 101.0 + i, "end": 101.5 + i, "rows": 10} for i in range(3)]
    records.running = [{"actor": "a", "node": "n", "start": 104.0, "rows": 10}]
    now[0] = 105.9  # 1.9 s into a call, limit max(2, 5 × 0.5) = 2.5 s
    assert watch() is None and watch.limit_s == 2.5
    now[0] = 106.6
    message = watch() or ""
    assert "1 UDF call running" in message and "limit 2 s" in message
    state = watch.state()
    assert state["actors"] == [
        {
            "actor": "a",
            "node": "n",
            "state": "in a call",
            "calls": 3,
            "rows_done": 30,
            "ready_at_s": 1.0,
            "last_call_start_s": 4.0,
            "last_call_rows": 10,
            "in_call_for_s": 2.6,
        }
    ]


def test_rows_coming_out_count_as_progress() -> None:
    now = [0.0]
    rows = [0]
    watch = StallWatch(_Records(), 1.0, started=0.0, concurrency=1, rows_out=lambda: rows[0], clock=lambda: now[0])
    for step in range(1, 20):
        now[0] = step * 2.0  # 2 s between checks, limit 5 s: only the rows keep it alive
        rows[0] += 10
        assert watch() is None


def test_actor_states_idle_actor_keeps_its_last_call() -> None:
    calls = [{"actor": "b", "node": "n", "start": 12.0, "end": 13.0, "rows": 4}]
    assert actor_states(calls, [], [], now=20.0, origin=10.0) == [
        {
            "actor": "b",
            "node": "n",
            "state": "idle",
            "calls": 1,
            "rows_done": 4,
            "last_call_start_s": 2.0,
            "last_call_rows": 4,
        }
    ]


def test_combine_first_reason_wins() -> None:
    assert combine(None, None) is None
    check = combine(None, lambda: None, lambda: "second", lambda: "third")
    assert check is not None and check() == "second"


class _Model:
    def __call__(self, ids: list[int]) -> list[int]:
        return ids


def test_recording_names_the_instrumented_udfs_it_built() -> None:
    # The run arms the watchdog only when some UDF will report calls; building one is the sign.
    small = plan(profile_numbers(100, 8), ClusterSpec(nodes=1, cpus_per_node=2), concurrency=1, batch_size=10)
    with recording({"kind": "none"}) as built:
        assert built == []
        actor_udf(_Model, small, return_dtype=daft.DataType.int64(), name="scorer")
    assert built == ["scorer"]
    with recording(None) as outside:  # no sink: nothing is recorded, so nothing to watch
        actor_udf(_Model, small, return_dtype=daft.DataType.int64())
    assert outside == []


# ---------------------------------------------------------------------------------------------------
# Real stalls, on the native runner


@pytest.mark.slow
@pytest.mark.parametrize("images", [False, True], ids=["udf-process", "udf-thread"])
def test_native_model_that_stops_answering_ends_the_run(tmp_path, images: bool) -> None:
    path = _pipeline(tmp_path, images=images)
    marker = uuid.uuid4().hex
    began = time.time()
    # --calibrate off: the run itself must meet the stuck model (not a calibration sample run first).
    args = ["run", path, "--stall-timeout", "1", "--calibrate", "off", "--report", str(tmp_path / "rep")]
    done = _run_cli([*args, "--no-progress"], marker)
    took = time.time() - began
    assert done.returncode == 2, done.stderr
    line = [x for x in done.stderr.splitlines() if x.startswith("daftscale: error:")]
    assert len(line) == 1 and "the run stalled" in line[0] and "--stall-timeout" in line[0], done.stderr
    # Generous: Python and Daft start-up plus a 1 s floor; a watchdog that never fired would hit the timeout.
    assert took < 100
    report = _read_report(tmp_path / "rep")
    assert report["status"] == "failed: stalled" and report["rows_out"] < report["rows_in"] == 400
    actors = report["stall"]["actors"]
    assert actors and any(a["state"] == "in a call" and a["last_call_rows"] == 10 for a in actors)
    assert all(a["calls"] == 3 for a in actors if not images)  # each worker answered 3 calls, then hung
    deadline = time.time() + 10
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.2)
    assert not _processes_with(marker), "the stalled run left processes behind"


@pytest.mark.slow
def test_native_slow_but_alive_model_is_not_stopped(tmp_path) -> None:
    # 3 s calls against a 2 s floor: the first call gets 5 × 2 s, later ones 5 × 3 s.
    path = _pipeline(tmp_path, answer=10**6, sleep=3.0, batch=10, actors=1, rows=30)
    done = _run_cli(["run", path, "--stall-timeout", "2", "--no-progress"], uuid.uuid4().hex)
    assert done.returncode == 0, done.stderr
    assert "30 → 30" in done.stdout


# ---------------------------------------------------------------------------------------------------
# A real stall on a local Ray cluster started for the run


@pytest.mark.slow
@pytest.mark.ray
def test_ray_model_that_stops_answering_ends_the_run_and_its_cluster(tmp_path) -> None:
    path = _pipeline(tmp_path, answer=3, sleep=0.02)
    marker = uuid.uuid4().hex
    args = ["run", path, "--local-cluster", "2x1", "--stall-timeout", "5", "--calibrate", "off"]
    args += ["--report", str(tmp_path / "rep")]
    done = _run_cli([*args, "--no-progress"], marker, timeout=170)
    assert done.returncode == 2, done.stderr
    assert "the run stalled" in done.stderr and "killed" in done.stderr
    report = _read_report(tmp_path / "rep")
    assert report["status"] == "failed: stalled" and report["runner"] == "ray"
    assert any(a["state"] == "in a call" for a in report["stall"]["actors"])
    # Every process the run started (its Ray head, raylets, workers, UDF actors) inherits the marker in its
    # environment, so this finds them without confusing them with other Ray clusters on the machine
    # (comparing /tmp/ray sessions before and after would count clusters that other processes started).
    deadline = time.time() + 20
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.5)
    assert not _processes_with(marker), "processes of the run's Ray cluster outlived it"


# ---------------------------------------------------------------------------------------------------
# Queries before the run (profiling, counting): no UDF progress to watch, so bounded and never silent


def test_bounded_prep_says_it_waits_then_stops_waiting() -> None:
    said: list[str] = []
    # 0.1 s floor: the limit is PREP_STALL_FACTOR × 0.1 s; the work would take far longer (a stuck query).
    started = time.monotonic()
    with pytest.raises(RunError, match=r"^profiling x did not finish in \d+ s \(5 × --stall-timeout\)"):
        bounded_prep(lambda: time.sleep(30), what="profiling x", floor_s=0.1, say=said.append, notice_s=0.2)
    assert time.monotonic() - started < 5 and PREP_STALL_FACTOR == 5
    assert said and all(line.startswith("daftscale: still profiling x after") for line in said)
    # Work that finishes hands back its value, or its own error, and says nothing.
    assert bounded_prep(lambda: 42, what="x", floor_s=0.1, say=said.append) == 42
    with pytest.raises(ZeroDivisionError):
        bounded_prep(lambda: 1 / 0, what="x", floor_s=None, say=said.append)


STUCK_PROFILE = """
    import daft, daftscale

    class Model:
        def __call__(self, xs: list[int]) -> list[int]:
            return [x + 1 for x in xs]

    @daftscale.pipeline(batch_size=16, concurrency=2)
    def build(plan):
        df = daft.from_pydict({"x": list(range(2000))}).into_partitions(4)
        df = plan.apply(df)
        return df.with_column("y", plan.udf(Model, return_dtype=daft.DataType.int64())(df["x"]))
"""


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.parametrize("command", [["run"], ["tune", "--no-cache"]], ids=["run", "tune"])
def test_a_profile_daft_never_finishes_ends_in_one_line(tmp_path, command: list[str]) -> None:
    # Daft 0.7.26's Ray runner never finishes a limit after into_partitions (measured: 2 minutes, killed), and
    # profiling this scaling input takes one. Before, the run waited for ever with nothing said, and the tuner
    # (which had no --stall-timeout) 5 × the 60 s default.
    path = tmp_path / "pipe.py"
    path.write_text(textwrap.dedent(STUCK_PROFILE))
    marker = uuid.uuid4().hex
    args = [command[0], str(path), *command[1:], "--local-cluster", "2x1", "--stall-timeout", "2", "--no-progress"]
    done = _run_cli(args, marker, timeout=150)
    assert done.returncode == 2, done.stderr
    error = [line for line in done.stderr.splitlines() if line.startswith("daftscale: error:")]
    assert len(error) == 1 and "profiling the DataFrame at the scaling step" in error[0], done.stderr
    assert "into_partitions" in error[0] and "--stall-timeout" in error[0]
    deadline = time.time() + 20
    while _processes_with(marker) and time.time() < deadline:
        time.sleep(0.5)
    assert not _processes_with(marker), f"processes of the {command[0]}'s Ray cluster outlived it"


# ---------------------------------------------------------------------------------------------------
# Row-wise and async methods: watched through windows of progress, not timed call by call


class _Events:
    """A recorder that keeps what it is told, as the collector would receive it."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def window(self, key, start, end, rows) -> None:
        self.events.append({"event": "end", "key": key, "start": start, "end": end, "rows": rows, "window": True})

    def started(self, key, start, rows) -> None:
        self.events.append({"event": "start", "key": key, "start": start, "rows": rows})

    def finished(self, key, start, end, rows) -> None:
        self.events.append({"event": "end", "key": key, "start": start, "end": end, "rows": rows})

    def failed(self, key, start, end, rows, error) -> None:
        self.events.append({"event": "failed", "key": key, "start": start, "end": end, "rows": rows})


def test_call_window_reports_rows_as_progress_and_a_long_call_as_running() -> None:
    from daftscale.udf import CallWindow, split_calls

    events = _Events()
    window = CallWindow(events, period_s=0.05)
    for _ in range(5):
        window.end(window.begin(1))
    window.report()
    [progress] = events.events
    assert progress["window"] and progress["rows"] == 5
    assert split_calls(events.events) == ([], [])  # progress for the watchdog, no call for the report

    stuck = window.begin(1)
    window.report()  # not running long enough yet: nothing to say
    assert len(events.events) == 1
    time.sleep(0.06)
    window.report()
    running = [e for e in events.events if e["event"] == "start"]
    assert [e["key"] for e in running] == [stuck]  # the stall watchdog sees one call running since its start
    window.end(stuck)  # ...and its end, under its own key, so it is not left running
    finished, still_running = split_calls(events.events)
    assert [c["key"] for c in finished] == [stuck] and still_running == []


ROW_WISE_HANG = """
import asyncio, time
import daft

@daft.cls(max_concurrency=1)
class Model:
    @daft.method(return_dtype=daft.DataType.int64())
    def __call__(self, i: int):
        if i == 37:
            time.sleep(3600)  # a model call that never returns
        return i * 2

@daft.cls(max_concurrency=1)
class Client:
    @daft.method.batch(return_dtype=daft.DataType.int64(), batch_size=10)
    async def __call__(self, ids: daft.Series):
        values = ids.to_pylist()
        if 37 in values:
            await asyncio.sleep(3600)  # a remote service that never answers
        return [v * 2 for v in values]

df = daft.from_pydict(dict(id=list(range(100))))
df = df.with_column("out", MODEL()(df["id"]))
df.write_parquet(OUT)
"""


@pytest.mark.slow
@pytest.mark.parametrize("model", ["Model", "Client"], ids=["row-wise", "async-batch"])
def test_a_script_whose_row_wise_or_async_method_hangs_is_stopped(tmp_path, model: str) -> None:
    # Such methods are not timed call by call; their progress windows still let the watchdog see the hang.
    path = tmp_path / "script.py"
    path.write_text(ROW_WISE_HANG.replace("MODEL", model).replace("OUT", repr(str(tmp_path / "out"))))
    began = time.time()
    done = _run_cli(["run", str(path), "--stall-timeout", "1", "--calibrate", "off", "--no-progress"], uuid.uuid4().hex)
    assert done.returncode == 2, done.stderr
    assert "the run stalled" in done.stderr and "running for over" in done.stderr, done.stderr
    assert time.time() - began < 100  # a watchdog that never fired would hit the subprocess timeout
    assert not (tmp_path / "out").exists()
