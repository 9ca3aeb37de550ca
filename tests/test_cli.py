"""The `daftscale` command: the JSON contract of `plan`, its text, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daftscale.cli import main
from daftscale.plan import PLAN_INPUT_KEYS, PLAN_JSON_KEYS


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_plan_json_seed_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "plan", "--rows", "1000000", "--nodes", "4", "--concurrency", "16", "--batch-size", "64",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert set(PLAN_JSON_KEYS) <= data.keys()
    assert set(PLAN_INPUT_KEYS) <= data["inputs"].keys()
    assert (data["actors_per_node"], data["min_rows_per_partition"], data["max_partitions"], data["partitions"]) == (
        4,
        256,
        3906,
        977,
    )
    assert data["strategy"] == "shuffle" and data["partition_bytes_target"] is None
    assert all({"code", "message"} <= w.keys() for w in data["warnings"])


def test_plan_text_reads_like_the_worked_example(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "plan", "--rows", "1000000", "--nodes", "4", "--concurrency", "16")
    assert code == 0
    for needle in ("shuffle", "ceil(16 / 4) = 4", "64 × 4 = 256", "3,906", "977", "df.repartition(977)"):
        assert needle in out


def test_plan_streaming_from_parquet_blobs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pq.write_table(pa.table({"id": list(range(50)), "image": [bytes(300_000)] * 50}), tmp_path / "blobs.parquet")
    code, out, err = run_cli(
        capsys, "plan", str(tmp_path), "--nodes", "2", "--cpus-per-node", "4", "--memory-per-node", "8GiB",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert data["strategy"] == "streaming" and data["partitions"] is None
    assert isinstance(data["partition_bytes_target"], int) and data["partition_bytes_target"] > 0
    assert data["inputs"]["rows"] == 50


def test_plan_columns_option_classifies_what_the_udf_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pq.write_table(pa.table({"path": ["a"] * 10, "image": [bytes(100_000)] * 10}), tmp_path / "t.parquet")
    code, out, _ = run_cli(capsys, "plan", str(tmp_path), "--columns", "path", "--nodes", "1", "--format", "json")
    assert code == 0 and json.loads(out)["strategy"] == "shuffle"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["plan", "--rows", "0"], "--rows must be a positive integer"),
        (["plan", "--rows", "-5"], "--rows must be a positive integer"),
        (["plan", "--rows", "100", "--batch-size", "0"], "--batch-size must be a positive integer"),
        (["plan", "--rows", "100", "--concurrency", "-1"], "--concurrency must be a positive integer"),
        (["plan", "--rows", "100", "--nodes", "0"], "--nodes must be a positive integer"),
        (["plan", "--rows", "100", "--memory-per-node", "64 gigs"], "malformed memory size"),
        (["plan", "--rows", "100", "--udf-memory", "-1GiB"], "malformed memory size"),
        (["plan", "--rows", "ten"], "Invalid value for '--rows'"),
        (["plan", "/definitely/not/here"], "path not found"),
        (["plan"], "nothing to profile"),
        (["plan", "--rows", "10", "--strategy", "fast"], "Invalid value for '--strategy'"),
        (["plan", "--rows", "10", "--udf-gpus", "1"], "GPU"),
        (["plan", "--rows", "10", "--ray", "127.0.0.1:1"], "does not answer"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and err.startswith("daftscale: error: ")
    assert "Traceback" not in err


def test_bad_file_inputs_via_the_real_command(tmp_path: Path) -> None:
    (tmp_path / "notes.parquet").write_text("not parquet at all")
    (tmp_path / "empty").mkdir()
    for target, needle in ((tmp_path / "notes.parquet", "not a Parquet file"), (tmp_path / "empty", "no data files")):
        proc = subprocess.run(
            [sys.executable, "-m", "daftscale.cli", "plan", str(target)], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 2
        assert needle in proc.stderr and "Traceback" not in proc.stderr
        assert proc.stderr.strip().count("\n") == 0


@pytest.mark.ray
def test_plan_discovers_a_running_cluster_in_a_new_process(ray_cluster) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "daftscale.cli",
            "plan",
            "--rows",
            "10000",
            "--ray",
            ray_cluster.address,
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["inputs"]["nodes"] == 2 and data["inputs"]["cpus_per_node"] == 2
    assert data["concurrency"] == 4  # 2 nodes × 2 CPUs at 1 CPU per actor


@pytest.mark.parametrize("value", ["soon", "-3"])
def test_run_bad_stall_timeout_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    # Checked before the pipeline file is even read (it does not exist here).
    code, _, err = run_cli(capsys, "run", str(tmp_path / "pipe.py"), f"--stall-timeout={value}")
    assert code == 2
    assert err.strip().splitlines() == [
        f"daftscale: error: --stall-timeout must be a number of seconds, got {value!r}: "
        "pass e.g. 120, or 0 to turn the watchdog off"
    ]


def test_run_help_lists_the_stall_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "--stall-timeout SECONDS" in out and "0 turns the watchdog off" in " ".join(out.split())


GPU_SCRIPT = """
import daft
from daft import col

@daft.cls(gpus=1, max_concurrency=2)
class GpuModel:
    @daft.method.batch(return_dtype=daft.DataType.int64(), batch_size=16)
    def __call__(self, ids: daft.Series):
        return [i + 1 for i in ids.to_pylist()]

df = daft.read_parquet({source!r})
df.with_column("y", GpuModel()(col("id"))).write_parquet({out!r})
"""


def _named_options(message: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z-]+", message))


def _gpu_script(tmp_path: Path) -> tuple[Path, Path]:
    pq.write_table(pa.table({"id": list(range(120))}), tmp_path / "in.parquet")
    script = tmp_path / "gpu_job.py"
    script.write_text(GPU_SCRIPT.format(source=str(tmp_path / "in.parquet"), out=str(tmp_path / "out")))
    return script, tmp_path / "out"


@pytest.mark.ray
def test_run_of_a_gpu_script_on_a_cpu_cluster_names_the_scripts_request_and_run_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script, out = _gpu_script(tmp_path)
    code, _, err = run_cli(capsys, "run", str(script), "--runner", "ray", "--no-progress", "--calibrate", "off")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "the script's @daft.cls(gpus=1) in gpu_job.py asks for 1 GPU per actor" in err
    assert "--udf-gpus 0 to run the model on CPU" in err
    # Every option the message names is one `daftscale run` has (no --gpus-per-node or --ray there).
    _, run_help, _ = run_cli(capsys, "run", "--help")
    assert _named_options(err) and _named_options(err) <= _named_options(run_help), err
    assert not out.exists()
    # `daftscale plan` keeps its own wording: there the request is --udf-gpus and the fix --gpus-per-node.
    code, _, err = run_cli(capsys, "plan", "--rows", "10", "--udf-gpus", "1")
    assert code == 2 and "--gpus-per-node" in err
    _, plan_help, _ = run_cli(capsys, "plan", "--help")
    assert _named_options(err) <= _named_options(plan_help), err


@pytest.mark.ray
def test_an_explicit_udf_gpus_0_overrides_the_scripts_gpu_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 0 is --udf-gpus's default value: given on the command line it must still reach the planner.
    script, out = _gpu_script(tmp_path)
    argv = ["run", str(script), "--runner", "ray", "--no-progress", "--calibrate", "off", "--udf-gpus", "0"]
    code, _, err = run_cli(capsys, *argv, "--report", str(tmp_path / "rep"))
    assert code == 0, err
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["plan"]["udf_gpus"] == 0 and report["rows_out"] == 120
    assert sorted(pq.read_table(str(out)).column("y").to_pylist()) == list(range(1, 121))
    # Given with a plan file it is a planner option like any other, named as the user wrote it.
    code, _, err = run_cli(capsys, "run", str(script), "--plan", str(tmp_path / "p.json"), "--udf-gpus", "0")
    assert code == 2 and "planner options (--udf-gpus)" in err


ARGPARSE_SCRIPT = """
import argparse
import daft

parser = argparse.ArgumentParser()
parser.add_argument("source")
parser.add_argument("--limit", type=int, default=None)
parser.add_argument("--out", required=True)
args = parser.parse_args()
df = daft.read_parquet(args.source)
if args.limit is not None:
    df = df.limit(args.limit)
df.write_parquet(args.out)
"""


@pytest.mark.ray
def test_a_script_gets_its_own_arguments_after_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `daftscale run job.py ARGS`, options among them after `--`: the script's sys.argv[1:], as `python job.py ARGS`.
    pq.write_table(pa.table({"id": list(range(50))}), tmp_path / "in.parquet")
    script = tmp_path / "job.py"
    script.write_text(ARGPARSE_SCRIPT)
    out = tmp_path / "out"
    argv = ["run", str(script), "--runner", "ray", "--no-progress", "--calibrate", "off"]
    code, _, err = run_cli(capsys, *argv, "--", str(tmp_path / "in.parquet"), "--limit", "20", "--out", str(out))
    assert code == 0, err
    assert pq.read_table(str(out)).num_rows == 20
    # Without them the script's own argparse error is what the user sees first, and exit code 2.
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "the following arguments are required: source" in err, err


def test_python_dash_m_daftscale_is_the_command() -> None:
    src = str(Path(__file__).resolve().parent.parent / "src")
    done = subprocess.run(
        [sys.executable, "-m", "daftscale", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": src},
    )
    assert done.returncode == 0 and "Usage: daftscale run" in done.stdout, done.stderr
