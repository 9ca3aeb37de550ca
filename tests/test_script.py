"""Plain Daft scripts under ``daftscale run``: unmodified, sized by the plan, their output written once and whole.

The scripts (tests/scripts/) have the shape of Daft's image-classification and document-embedding
benchmarks, scaled down to local files; their models are synthetic stand-ins for GPU models (each batch
sleeps a fixed plus a per-row time). In-process tests run on the shared local Ray cluster (conftest.py);
the native runner, ``python script.py`` alone, and killed runs are subprocesses, as a user would run them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from daftscale.errors import PipelineError, RunError
from daftscale.run import run

pytestmark = pytest.mark.ray

SCRIPTS = Path(__file__).resolve().parent / "scripts"
IMAGES = SCRIPTS / "image_classification.py"
EMBEDDINGS = SCRIPTS / "document_embedding.py"
DAFTSCALE = [sys.executable, "-m", "daftscale.cli"]
SRC = str(Path(__file__).resolve().parent.parent / "src")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A subprocess environment running this worktree's daftscale, the script's files under tmp_path."""
    env = {**os.environ, "DAFT_PROGRESS_BAR": "0", "SCRIPT_DATA": str(tmp_path / "input.parquet")}
    env["PYTHONPATH"] = os.pathsep.join([SRC, env.get("PYTHONPATH", "")])
    env.pop("RAY_ADDRESS", None)  # a native run must not join the test cluster
    env.update(extra)
    return env


def _script_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, **extra: str) -> Path:
    monkeypatch.setenv("SCRIPT_DATA", str(tmp_path / "input.parquet"))
    out = tmp_path / "out"
    monkeypatch.setenv("SCRIPT_OUT", str(out))
    for key, value in extra.items():
        monkeypatch.setenv(key, value)
    return out


def _ids(out: Path, column: str) -> list[int]:
    return sorted(pq.read_table(str(out), columns=[column]).column(column).to_pylist())


def test_image_script_runs_unmodified_with_the_plans_numbers(monkeypatch, tmp_path) -> None:
    out = _script_env(monkeypatch, tmp_path, SCRIPT_ROWS="300")
    # The script asks for 8 actors and batches of 100; the plan's 2 and 16 must be what runs.
    report = run(str(IMAGES), runner="ray", batch_size=16, concurrency=2, progress=False, report_dir=tmp_path / "rep")
    assert report.plan["batch_size"] == 16 and report.plan["concurrency"] == 2
    assert max(c["rows"] for c in report.udf_calls) <= 16
    assert len({c["actor"] for c in report.udf_calls}) <= 2
    assert sum(c["rows"] for c in report.udf_calls) == 300
    assert report.rows_in == report.rows_out == 300
    # Written once, every row exactly once, and nothing else left beside it.
    assert _ids(out, "id") == list(range(300))
    assert report.output["rows"] == 300 and report.output["files"] == len(list(out.iterdir()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.parquet", "out", "rep"]
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["output"]["path"] == str(out)
    # A rerun onto the output refuses before running; --overwrite replaces it, --append adds to it.
    with pytest.raises(RunError, match=r"already holds files.*--overwrite"):
        run(str(IMAGES), runner="ray", progress=False)
    run(str(IMAGES), runner="ray", batch_size=16, concurrency=2, progress=False, overwrite=True)
    assert _ids(out, "id") == list(range(300))
    run(str(IMAGES), runner="ray", batch_size=16, concurrency=2, progress=False, append=True)
    assert _ids(out, "id") == sorted(list(range(300)) * 2)


def test_keep_udf_settings_runs_the_authors_numbers(monkeypatch, tmp_path) -> None:
    out = _script_env(monkeypatch, tmp_path, SCRIPT_DOCS="120")
    report = run(str(EMBEDDINGS), runner="ray", keep_udf_settings=True, progress=False)
    # The script's own @daft.cls(max_concurrency=2) and batch(batch_size=32), planned around.
    assert report.plan["batch_size"] == 32 and report.plan["concurrency"] == 2
    assert max(c["rows"] for c in report.udf_calls) <= 32
    assert len({c["actor"] for c in report.udf_calls}) <= 2
    # The explode makes 3 chunks per document: rows out are counted from the written files.
    assert report.rows_in == 120 and report.rows_out == 360 == report.output["rows"]
    table = pq.read_table(str(out))
    assert table.num_rows == 360 and sorted(set(table.column("doc_id").to_pylist())) == list(range(120))


def test_collect_ending_script_counts_on_the_workers(monkeypatch, tmp_path) -> None:
    out = _script_env(monkeypatch, tmp_path, SCRIPT_DOCS="80", SCRIPT_ACTION="collect")
    report = run(str(EMBEDDINGS), runner="ray", batch_size=8, concurrency=2, progress=False)
    assert report.rows_out == 240 and report.output is None and report.partitions >= 1
    assert max(c["rows"] for c in report.udf_calls) <= 8
    assert not out.exists()
    # --output gives a collect-ending script (or a pipeline file) somewhere to write.
    report = run(str(EMBEDDINGS), runner="ray", output=tmp_path / "kept", progress=False)
    assert report.output["format"] == "parquet" and report.output["rows"] == 240
    assert pq.read_table(str(tmp_path / "kept")).num_rows == 240


def test_udf_that_raises_late_leaves_no_output(monkeypatch, tmp_path) -> None:
    out = _script_env(monkeypatch, tmp_path, SCRIPT_ROWS="200", SCRIPT_FAIL_AFTER="120")
    with pytest.raises(RunError, match="stand-in model failed late"):
        run(str(IMAGES), runner="ray", batch_size=20, concurrency=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.parquet"]
    assert not out.exists()


JOIN_SCRIPT = """
import time
import daft

@daft.cls(max_concurrency=8)
class Model:
    @daft.method.batch(return_dtype=daft.DataType.int64())
    def __call__(self, xs):
        time.sleep(0.005)  # a synthetic stand-in for a model call
        return [x * 2 for x in xs.to_pylist()]

daft.set_runner_ray()
keys = daft.from_pydict({{"key": [0, 1, 2], "label": ["a", "b", "c"]}})
df = daft.read_parquet({files!r}).join(keys, on="key")
df = df.with_column("y", Model()(df["x"]))
df.groupby("label").agg(daft.col("y").sum().alias("total"), daft.col("x").count().alias("rows")).write_parquet({out!r})
"""


def test_a_script_joining_several_reads_runs_with_the_step_after_its_parquet_read_of_most_files(tmp_path) -> None:
    # A join of many small files with a small table, as plain Daft: the scaling step follows the Parquet
    # read of the most files (the small table is the script's first read), which the footers profile.
    import pyarrow as pa

    files = []
    for i in range(30):
        files.append(str(tmp_path / f"part-{i:02d}.parquet"))
        pq.write_table(pa.table({"x": list(range(i * 10, i * 10 + 10)), "key": [i % 3] * 10}), files[-1])
    out = tmp_path / "out"
    path = tmp_path / "join.py"
    path.write_text(JOIN_SCRIPT.format(files=files, out=str(out)))
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok"
    assert report.plan["inputs"]["files"] == 30 and report.plan["inputs"]["rows"] == 300
    table = pq.read_table(str(out)).to_pydict()
    assert sorted(table["rows"]) == [100, 100, 100] and sum(table["total"]) == 2 * sum(range(300))
    assert sum(call["rows"] for call in report.udf_calls) == 300


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("df = daft.from_pydict({'x': [1]})\n", "no terminal action"),
        ("df = daft.from_pydict({'x': [1]})\ndf.write_lance(OUT)\n", "write_lance"),
    ],
)
def test_scripts_daftscale_cannot_run_get_one_line(tmp_path, body: str, words: str) -> None:
    path = tmp_path / "script.py"
    path.write_text(f"import daft\nOUT = {str(tmp_path / 'out')!r}\n{body}")
    with pytest.raises(PipelineError, match=words) as caught:
        run(str(path), runner="ray", progress=False)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_script_alone_and_under_daftscale_native(tmp_path) -> None:
    # Alone: the script never imports daftscale and writes its output itself.
    alone = subprocess.run(
        [sys.executable, str(EMBEDDINGS)],
        env=_env(tmp_path, SCRIPT_OUT=str(tmp_path / "alone")),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert alone.returncode == 0, alone.stderr
    assert pq.read_table(str(tmp_path / "alone")).num_rows == 300
    out = tmp_path / "under"
    argv = [*DAFTSCALE, "run", str(EMBEDDINGS), "--no-progress", "--report", str(tmp_path / "rep")]
    proc = subprocess.run(argv, env=_env(tmp_path, SCRIPT_OUT=str(out)), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["runner"] == "native" and data["rows_out"] == 300 == pq.read_table(str(out)).num_rows
    # The same embeddings as the script alone: daftscale changed how it ran, not what it computed.
    alone_rows = sorted(map(str, pq.read_table(str(tmp_path / "alone")).to_pylist()))
    assert sorted(map(str, pq.read_table(str(out)).to_pylist())) == alone_rows
    again = subprocess.run(argv, env=_env(tmp_path, SCRIPT_OUT=str(out)), capture_output=True, text=True, timeout=180)
    assert again.returncode == 2
    assert again.stderr.strip().count("\n") == 0 and "already holds" in again.stderr


ON_RAY_SCRIPT = """
import os
import daft

@daft.cls(max_concurrency=2)
class WhereAmI:
    @daft.method.batch(return_dtype=daft.DataType.bool())
    def __call__(self, xs):
        import ray  # in a Ray actor only when the job really runs on Ray

        return [ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None] * len(xs)

df = daft.from_pydict({"x": list(range(64))})
df.with_column("on_ray", WhereAmI()(df["x"])).write_parquet(os.environ["SCRIPT_OUT"])
"""


TWO_MODELS_SCRIPT = """
import time
import daft

@daft.cls(max_concurrency=2)
class Embedder:
    @daft.method.batch(return_dtype=daft.DataType.int64())
    def __call__(self, xs):
        time.sleep(0.002)  # a synthetic stand-in for a model call
        return [x * 2 for x in xs.to_pylist()]

@daft.cls(max_concurrency=2)
class Classifier:
    @daft.method.batch(return_dtype=daft.DataType.int64())
    def __call__(self, xs):
        time.sleep(0.01)  # a synthetic stand-in for a model call
        return [x % 3 for x in xs.to_pylist()]

df = daft.read_parquet({files!r})
df = df.with_column("e", Embedder()(df["x"]))
df.with_column("label", Classifier()(df["e"])).write_parquet({out!r})
"""


def test_a_script_with_two_models_shares_the_cluster_between_them(tmp_path) -> None:
    # Both models' actor pools run at once. Each used to get the plan's whole concurrency (4 actors each on the
    # 2 × 2 cluster's 4 CPUs): Daft waited 120 s for actors that could not start, then failed.
    import pyarrow as pa

    files = []
    for i in range(8):
        files.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(pa.table({"x": list(range(i * 50, (i + 1) * 50))}), files[-1])
    out = tmp_path / "out"
    path = tmp_path / "two.py"
    path.write_text(TWO_MODELS_SCRIPT.format(files=files, out=str(out)))
    started = time.monotonic()
    report = run(str(path), runner="ray", progress=False)
    assert time.monotonic() - started < 100, "the actors waited for CPUs the other model held"
    assert report.status == "ok" and report.rows_out == 400
    assert report.plan["concurrency"] == 2 and report.plan["inputs"]["models"] == 2
    assert any("shared by the pipeline's 2 models" in step for step in report.plan["steps"])
    assert _ids(out, "x") == list(range(400)) and sorted(set(_ids(out, "label"))) == [0, 1, 2]
    # Each model with its author's settings: nothing is divided, and the authors' 2 + 2 actors fit.
    kept = run(str(path), runner="ray", progress=False, keep_udf_settings=True, overwrite=True)
    assert kept.status == "ok" and kept.plan["concurrency"] == 2 and "models" not in kept.plan["inputs"]


def test_a_script_under_daftscale_on_ray_runs_on_ray(tmp_path) -> None:
    # The script's daft.from_pydict fixes Daft's runner for its process: loaded before Ray started, the job
    # ran on the driver's native runner while the report said Ray. Its UDF now runs in Ray actors.
    path = tmp_path / "where.py"
    path.write_text(ON_RAY_SCRIPT)
    out = tmp_path / "out"
    argv = [*DAFTSCALE, "run", str(path), "--local-cluster", "2x2", "--no-progress", "--report", str(tmp_path / "rep")]
    proc = subprocess.run(argv, env=_env(tmp_path, SCRIPT_OUT=str(out)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["runner"] == "ray"
    assert pq.read_table(str(out)).column("on_ray").to_pylist() == [True] * 64
    # A process whose Daft runner is already native cannot run on Ray: one line, not a native run called Ray.
    code = (
        "import daft, sys\n"
        "daft.from_pydict({'x': [1]})\n"
        "from daftscale.errors import RunError\n"
        "from daftscale.run import runtime\n"
        "try:\n"
        "    with runtime('ray', local_cluster='1x2'):\n"
        "        pass\n"
        "except RunError as exc:\n"
        "    print(exc)\n"
    )
    guard = subprocess.run(
        [sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert "already runs this process on its native runner" in guard.stdout, guard.stderr


def _staging(parent: Path) -> list[Path]:
    return [p for p in parent.iterdir() if ".daftscale-staging-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_run_killed_mid_write_leaves_no_output(tmp_path, sig: signal.Signals) -> None:
    out = tmp_path / "out"
    # 40 batches of 0.25 s on the native runner: the write is under way for several seconds.
    env = _env(tmp_path, SCRIPT_OUT=str(out), SCRIPT_DOCS="400", SCRIPT_SLEEP="0.25")
    argv = [*DAFTSCALE, "run", str(EMBEDDINGS), "--no-progress", "--batch-size", "32", "--concurrency", "1"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not _staging(tmp_path) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert _staging(tmp_path), "the run never started writing"
        time.sleep(2.0)  # well into the write (it takes 10 s)
        proc.send_signal(sig)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not out.exists()
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        # Daft's native engine takes Ctrl-C too, so the exit code varies (130 interrupted, 2 the query's error,
        # or an abort as the process exits under Daft's engine); the output is never there.
        assert not _staging(tmp_path), err  # an interrupted run cleans up after itself
    # A killed run's staging directory is hidden beside the target, and the next run removes it.
    rerun = subprocess.run(
        [*argv[:-4], "--batch-size", "64"],
        env={**env, "SCRIPT_SLEEP": "0"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert pq.read_table(str(out)).num_rows == 1200
    assert not _staging(tmp_path)
    # Nor does the killed run's spool of UDF records outlive the next run.
    assert not list(Path(tempfile.gettempdir()).glob(f"daftscale-udf-{proc.pid}-*"))


# A plain script with one model (a synthetic stand-in for a model call); ACTION is its terminal action and after.
AFTER_THE_ACTION = """
import json, time
import daft

@daft.cls(max_concurrency=2)
class Model:
    @daft.method.batch(return_dtype=daft.DataType.int64())
    def __call__(self, xs):
        time.sleep(0.01)  # synthetic stand-in for a model call
        return [x * 2 for x in xs.to_pylist()]

df = daft.from_pydict({"x": list(range(300))})
df = df.with_column("y", Model()(df["x"]))
ACTION
"""

COLLECT_THEN_USE = AFTER_THE_ACTION.replace("range(300)", "range(500)").replace(
    "ACTION", 'out = df.collect()\nout.show()\nprint("rows", len(out), out.to_pandas()["y"].sum())'
)


def test_a_script_that_uses_the_rows_it_collected_goes_on_with_them(tmp_path, capfd) -> None:
    # Under python the script shows and prints its rows after collect(); daftscale runs the collect as the job,
    # then the lines after it run with the collected rows, as under python (they used to be skipped, silently).
    path = tmp_path / "collect_then_use.py"
    path.write_text(COLLECT_THEN_USE)
    plain = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert plain.returncode == 0 and "rows 500 249500" in plain.stdout, plain.stderr
    capfd.readouterr()
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and report.rows_in == report.rows_out == 500, report.status
    assert sum(c["rows"] for c in report.udf_calls) == 500
    printed = capfd.readouterr().out
    assert "rows 500 249500" in printed and "(Showing first 8 rows)" in printed, printed


TO_PYLIST = """rows = df.to_pylist()
with open(RESULT, "w") as handle:
    json.dump(sum(row["y"] for row in rows), handle)
"""

WRITE_THEN_READ_BACK = """written = df.write_parquet(OUT)
back = daft.read_parquet(OUT)
with open(RESULT, "w") as handle:
    json.dump([len(written.to_pydict()["path"]), back.count_rows(), back.sum("y").to_pydict()["y"][0]], handle)
"""

SHOW_THEN_WRITE = """df.show()
df.write_parquet(OUT)
with open(RESULT, "w") as handle:
    json.dump(daft.read_parquet(OUT).count_rows(), handle)
"""


@pytest.mark.parametrize(
    ("action", "expected"),
    [(TO_PYLIST, 89700), (WRITE_THEN_READ_BACK, [None, 300, 89700]), (SHOW_THEN_WRITE, 300)],
    ids=["to_pylist-then-python", "write-then-read-back", "show-then-write"],
)
def test_the_lines_after_a_scripts_action_run_with_its_result(tmp_path, action: str, expected) -> None:
    # The job is the script's first action; what comes after runs once the job has, as under python: the rows a
    # to_pylist() returns, the paths a write returns and its output read back, a write after a debugging show().
    out, result = tmp_path / "out", tmp_path / "result.json"
    body = action.replace("OUT", repr(str(out))).replace("RESULT", repr(str(result)))
    path = tmp_path / "script.py"
    path.write_text(AFTER_THE_ACTION.replace("ACTION", body))
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and sum(c["rows"] for c in report.udf_calls) == 300
    got = json.loads(result.read_text())
    if isinstance(expected, list):
        files = report.output["files"]  # the write handed back the paths daftscale wrote
        assert got == [files, *expected[1:]]
    else:
        assert got == expected


def test_a_script_failing_after_its_job_says_so_and_keeps_the_output_and_report(tmp_path) -> None:
    out, report_dir = tmp_path / "out", tmp_path / "report"
    body = f"df.write_parquet({str(out)!r})\nraise ValueError('a bad line after the job')\n"
    path = tmp_path / "script.py"
    path.write_text(AFTER_THE_ACTION.replace("ACTION", body))
    with pytest.raises(PipelineError, match=r"ValueError: a bad line after the job .*after daftscale ran its job"):
        run(str(path), runner="ray", progress=False, report_dir=report_dir)
    assert pq.read_table(str(out)).num_rows == 300  # the job's output is whole
    assert json.loads((report_dir / "report.json").read_text())["status"] == "ok"


STATELESS_FUNCTION = """
import time
import daft

@daft.func.batch(return_dtype=daft.DataType.int64())
def score(xs):
    time.sleep(0.01)  # synthetic stand-in for a model call, run inside Daft's tasks (no actor pool)
    return [x * 2 for x in xs.to_pylist()]

df = daft.from_pydict({"x": list(range(300))})
df = df.with_column("y", score(df["x"]))
df.collect()
"""


def test_a_script_whose_udf_reports_no_calls_says_its_actor_figures_are_unknown(tmp_path) -> None:
    # A stateless @daft.func runs inside Daft's tasks: there is no actor pool, and daftscale does not time it.
    # Its report said "actors used 0 of 4", "0% busy"; unmeasured figures are unknown, never 0.
    path = tmp_path / "stateless.py"
    path.write_text(STATELESS_FUNCTION)
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and report.rows_in == report.rows_out == 300
    assert report.udf_calls == [] and report.batches is None and report.actor_utilization is None
    assert report.actors_used is None and report.udf_profile is None
    assert any("no UDF of this job reports its calls" in line for line in report.measurement_incomplete)
    summary = dict(report.summary())
    assert summary["actor utilisation"] == "unknown" and summary["actors used"].startswith("unknown")


def test_a_script_that_starts_ray_itself_runs_on_the_runs_ray(tmp_path) -> None:
    # `ray.init()` then `daft.set_runner_ray()` at the top: under daftscale the run's Ray is already up, where the
    # script's own ray.init() used to fail with "Maybe you called ray.init twice by accident?".
    out = tmp_path / "out"
    body = f"df.write_parquet({str(out)!r})\n"
    path = tmp_path / "script.py"
    path.write_text("import ray\nray.init()\n" + AFTER_THE_ACTION.replace("ACTION", body))
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and report.runner == "ray"
    assert pq.read_table(str(out)).num_rows == 300


def test_keep_udf_settings_lowers_a_pool_the_cluster_cannot_hold(tmp_path) -> None:
    # @daft.cls(max_concurrency=16) on the 2 × 2 test cluster: kept as it is, Daft waited 120 s for actors that
    # never start and only then ran 4 (no batch reached the 4 that started: the watchdog below would fire).
    out = tmp_path / "out"
    path = tmp_path / "script.py"
    script = AFTER_THE_ACTION.replace("max_concurrency=2", "max_concurrency=16")
    path.write_text(script.replace("ACTION", f"df.write_parquet({str(out)!r})\n"))
    report = run(str(path), runner="ray", keep_udf_settings=True, progress=False, stall_timeout=3)
    assert report.status == "ok" and pq.read_table(str(out)).num_rows == 300
    assert report.plan["concurrency"] == 4
    assert [w["code"] for w in report.plan["warnings"]] == ["CONCURRENCY_EXCEEDS_CLUSTER"]
    assert dict(report.summary())["plan warnings"].startswith("CONCURRENCY_EXCEEDS_CLUSTER")


def test_a_limit_after_the_scaling_step_finishes(tmp_path) -> None:
    # One input file: the formula plan splits it with into_partitions, which Daft 0.7.26's Ray runner never finishes
    # when a limit follows (the run hung with no UDF left to watch); the plan repartitions instead.
    import pyarrow as pa

    source, out = tmp_path / "in.parquet", tmp_path / "out"
    pq.write_table(pa.table({"x": list(range(300))}), source)
    read = f"daft.read_parquet({str(source)!r})"
    script = AFTER_THE_ACTION.replace('daft.from_pydict({"x": list(range(300))})', read)
    path = tmp_path / "script.py"
    path.write_text(script.replace("ACTION", f"df.limit(20).write_parquet({str(out)!r})\n"))
    report = run(str(path), runner="ray", progress=False, calibrate="off", stall_timeout=10)
    assert report.status == "ok" and pq.read_table(str(out)).num_rows == 20
    assert report.plan["partition_op"] == "repartition"


def test_a_show_after_a_sort_prints_the_first_rows(tmp_path, capfd) -> None:
    # show() computes its preview as Daft's does. A collected result's first rows came out of order after a sort
    # on Daft 0.7.26's Ray runner (about 1 run in 4), so the job's rows are not what the show prints from.
    path = tmp_path / "script.py"
    path.write_text(AFTER_THE_ACTION.replace("ACTION", 'df.sort("x", desc=True).show(3)\n'))
    capfd.readouterr()
    report = run(str(path), runner="ray", progress=False)
    assert report.status == "ok" and sum(c["rows"] for c in report.udf_calls) == 300
    shown = [line.split()[1] for line in capfd.readouterr().out.splitlines() if line.startswith("│ 29")]
    assert shown == ["299", "298", "297"], shown
