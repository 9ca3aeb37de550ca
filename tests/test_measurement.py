"""Every measurement path owns up to its gaps: each test breaks one on purpose (DAFTSCALE_FAULTS, the
documented fault hook in daftscale.faults, acting on the real recorder, collector and samplers) and checks
that the report says so, with unknown figures as null/"unknown", never as 0."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from daftscale.errors import RunError
from daftscale.faults import FAULTS_ENV
from daftscale.health import MeasurementHealth
from daftscale.report import RunReport
from daftscale.run import STATUS_MEMORY_UNGUARDED, run

pytestmark = pytest.mark.ray

DAFTSCALE = [sys.executable, "-m", "daftscale.cli"]

PIPELINE = """
    import time
    import daft, daftscale

    class Model:
        def __call__(self, xs: list[int]) -> list[int]:
            time.sleep({fixed})  # a synthetic stand-in for a model call: a fixed cost per batch
            return [x + 1 for x in xs]

    @daftscale.pipeline(batch_size={batch}, concurrency=2)
    def build(plan):
        df = daft.from_pydict({{"x": list(range({rows}))}})
        df = plan.apply(df)
        {filter}
        model = plan.udf(Model, return_dtype=daft.DataType.int64())
        return df.with_column("y", model(df["x"]))

    if __name__ == "__main__":
        build.main()
"""


def _pipeline(tmp_path, *, rows: int = 400, batch: int = 16, fixed: float = 0.005, filter: str = "") -> str:
    path = tmp_path / "pipe.py"
    path.write_text(textwrap.dedent(PIPELINE).format(rows=rows, batch=batch, fixed=fixed, filter=filter))
    return str(path)


def test_a_clean_run_reports_complete_measurement(tmp_path) -> None:
    report = run(_pipeline(tmp_path), runner="ray", progress=False)
    assert report.measurement_incomplete == []
    assert report.records_dropped == 0 and report.memory_samples_missed == {}
    # The default rows check is on for a plain with_column pipeline: a Daft upgrade that broke the plan
    # inspection would turn it off, and this fails.
    assert report.rows_checked is True
    assert sum(c["rows"] for c in report.udf_calls) == report.rows_in == 400


def test_dropped_records_are_counted_and_reported(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "drop-records")
    report = run(_pipeline(tmp_path), runner="ray", progress=False, report_dir=tmp_path / "rep")
    assert report.rows_out == report.rows_in == 400  # the batches themselves ran
    through = sum(c["rows"] for c in report.udf_calls)
    assert through < 400
    # Every second record of each actor was not delivered: at least the calls missing from the report.
    assert report.records_dropped is not None and report.records_dropped >= 1
    assert report.batches == len(report.udf_calls)
    text = " ".join(report.measurement_incomplete)
    assert f"at least {report.records_dropped:,} UDF call record(s) never reached the driver" in text
    assert f"cover {through:,} of 400 rows in" in text
    assert ("measurement incomplete", "; ".join(report.measurement_incomplete)) in report.summary()
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["records_dropped"] == report.records_dropped and data["measurement_incomplete"]


def test_dropped_records_on_the_native_runner_through_the_spool(tmp_path) -> None:
    out = tmp_path / "rep"
    env = {**__import__("os").environ, FAULTS_ENV: "drop-records"}
    proc = subprocess.run(
        [*DAFTSCALE, "run", _pipeline(tmp_path, rows=200), "--runner", "native", "--report", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["rows_out"] == 200 and data["records_dropped"] >= 1
    assert any("never reached the driver" in line for line in data["measurement_incomplete"])
    assert "measurement incomplete" in proc.stdout


def test_unreadable_records_make_their_figures_unknown(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "snapshot")
    report = run(_pipeline(tmp_path), runner="ray", progress=False, report_dir=tmp_path / "rep")
    assert report.rows_out == 400
    assert report.batches is None and report.actor_utilization is None and report.rows_failed is None
    assert report.records_dropped is None
    assert any("could not be read" in line for line in report.measurement_incomplete)
    summary = dict(report.summary())
    assert summary["UDF batches"] == "unknown" and summary["actor utilisation"] == "unknown"
    assert summary["rows failed (null)"] == "unknown"
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["batches"] is None and data["rows_failed"] is None and data["actor_utilization"] is None
    assert "unknown" in (tmp_path / "rep" / "report.html").read_text()


def test_failing_memory_sampler_makes_peaks_unknown(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "memory-sampler")
    report = run(_pipeline(tmp_path), runner="ray", progress=False, report_dir=tmp_path / "rep")
    assert report.peak_memory_bytes is None
    assert len(report.node_peak_memory_bytes) == 2
    assert all(v is None for v in report.node_peak_memory_bytes.values())
    assert all(n >= 1 for n in report.memory_samples_missed.values()) and len(report.memory_samples_missed) == 2
    assert sum("peak memory of node" in line and "InjectedFault" in line for line in report.measurement_incomplete) == 2
    assert dict(report.summary())["peak memory (node)"] == "unknown"
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["peak_memory_bytes"] is None
    # A report with unknown figures reads back as it was written.
    assert RunReport.read(tmp_path / "rep").peak_memory_bytes is None


def test_max_memory_that_cannot_sample_fails_the_run(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULTS_ENV, "memory-sampler")
    # 25 calls of 0.4 s on 2 actors: ~5 s of UDF work, longer than the few seconds the watch waits for a
    # sample before it gives up on the budget.
    path = _pipeline(tmp_path, fixed=0.4)
    with pytest.raises(RunError, match="cannot be enforced"):
        run(path, runner="ray", progress=False, max_memory="100GiB", report_dir=tmp_path / "rep")
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["status"] == STATUS_MEMORY_UNGUARDED
    assert data["peak_memory_bytes"] is None


def test_check_rows_options_and_the_default(tmp_path) -> None:
    # A filter after the scaling step changes the row count: the default does not check, and says so.
    path = _pipeline(tmp_path, rows=200, filter='df = df.where(df["x"] % 2 == 0)')
    default = run(path, runner="ray", progress=False)
    assert default.rows_out == 100 and default.rows_checked is False
    off = run(path, runner="ray", progress=False, check_rows=False)
    assert off.rows_checked is False and off.rows_out == 100
    with pytest.raises(RunError, match="rows were lost"):
        run(path, runner="ray", progress=False, check_rows=True)


def test_records_dropped_counts_a_lost_last_record() -> None:
    # Actor a's last record carried no count (it was the one dropped); its start shows the call began.
    events = [
        {"event": "start", "key": "k1", "actor": "a", "rows": 4},
        {"event": "end", "key": "k1", "actor": "a", "rows": 4, "udf": "M", "dropped": 0},
        {"event": "start", "key": "k2", "actor": "a", "rows": 4},
        {"event": "start", "key": "k3", "actor": "b", "rows": 4},
        {"event": "end", "key": "k3", "actor": "b", "rows": 4, "udf": "M", "dropped": 2},
    ]
    finished = MeasurementHealth(records_error=None, events=events, query_finished=True, rows_in=8, rows_checked=True)
    # b says 2 were lost, a's unfinished start says 1 more; the larger view (a lower bound) is kept.
    assert finished.records_dropped() == 2
    assert finished.udf_rows_short() == []  # 8 rows through M, 8 in
    short = MeasurementHealth(records_error=None, events=events, query_finished=True, rows_in=12, rows_checked=True)
    assert short.udf_rows_short() == ["the UDF M's call records cover 8 of 12 rows in"]
    # A stopped query's unfinished calls were cut off, not lost, and its rows need not all have passed.
    stopped = MeasurementHealth(
        records_error=None, events=events[:3], query_finished=False, rows_in=8, rows_checked=True
    )
    assert stopped.records_dropped() == 0 and stopped.udf_rows_short() == []
    unchecked = MeasurementHealth(
        records_error=None, events=events, query_finished=True, rows_in=12, rows_checked=False
    )
    assert unchecked.udf_rows_short() == []


def test_a_recorder_whose_collector_is_gone_counts_its_records_dropped_and_never_fails_the_call() -> None:
    # A UDF actor starting after the run's collector died (seen: a collector killed just after the run checked it
    # answered): before, ray.get_actor raised in the actor's __init__ and failed the user's query.
    import ray

    from daftscale.udf import _Recorder

    assert ray.is_initialized()  # the shared test cluster
    recorder = _Recorder({"kind": "ray", "name": "daftscale-collector-gone"}, "Model")
    recorder.ready(0.0, 0.1)
    recorder.started("k1", 0.1, 4)
    recorder.finished("k1", 0.1, 0.2, 4)
    assert recorder.dropped == 2  # the ready and the end records; a start only feeds the progress line


def test_a_kept_sampler_pauses_between_runs_and_measures_each_afresh() -> None:
    """A session keeps its memory sampler between runs: stop() pauses it, restart() starts from nothing."""
    import time

    from daftscale.memory import MEMORY_SAMPLE_INTERVAL_S, NodeMemorySampler

    sampler = NodeMemorySampler("native", keep=True)
    try:
        time.sleep(4 * MEMORY_SAMPLE_INTERVAL_S)
        first = sampler.stop()
        assert len(first) == 1 and next(iter(first.values())) > 0 and not sampler.unmeasured
        paused = sampler.health()
        time.sleep(4 * MEMORY_SAMPLE_INTERVAL_S)
        assert sampler.health() == paused  # no samples while no run is measured
        sampler.restart()
        # restart() starts the count from nothing; one interval later there is at most about one sample.
        assert next(iter(sampler.health().values()))[1] <= 2
        time.sleep(4 * MEMORY_SAMPLE_INTERVAL_S)
        second = sampler.stop()
        assert set(second) == set(first) and next(iter(second.values())) > 0
    finally:
        sampler.close()
