"""Pipeline files: loading by path, the probe, and one-line PipelineErrors for bad files."""

from __future__ import annotations

import textwrap

import daft
import pytest

from daftscale.errors import PipelineError
from daftscale.pipeline import Pipeline, load_pipeline, pipeline, probe


def _write(tmp_path, body: str, name: str = "pipe.py") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


GOOD = """
    import daft, daftscale

    @daftscale.pipeline(batch_size=8)
    def build(plan):
        df = daft.from_pydict({"x": list(range(20))})
        df = plan.apply(df)
        return df.with_column("y", df["x"] * 2)

    if __name__ == "__main__":
        raise SystemExit("must not run on import")
"""


def test_load_decorated_pipeline_and_probe(tmp_path) -> None:
    pipe = load_pipeline(_write(tmp_path, GOOD))
    assert isinstance(pipe, Pipeline) and pipe.planner_kwargs == {"batch_size": 8}
    found = probe(pipe)
    assert found.scaling_input.count_rows() == 20
    assert found.output.column_names == ["x", "y"]


def test_the_probe_handle_records_the_step_without_applying_it() -> None:
    # A build that reads the plan's numbers gets the provisional plan's during the probe, and plan.apply hands
    # back the very DataFrame it was given (the provisional plan's own step never shapes it), recorded as is.
    seen = {}

    @pipeline
    def build(plan):
        df = daft.from_pydict({"x": list(range(20))})
        stepped = plan.apply(df)
        seen.update(probing=plan.probing, batch_size=plan.batch_size, threads=int(plan.udf_cpus) or 1)
        seen["unchanged"] = stepped is df
        seen["df"] = df
        return stepped.with_column("y", daft.col("x") + 1)

    found = probe(build)
    assert found.scaling_input is seen.pop("df")
    assert seen == {"probing": True, "batch_size": 1, "threads": 1, "unchanged": True}


class _Double:
    def __call__(self, xs: list[int]) -> list[int]:
        return [x * 2 for x in xs]


def test_the_probe_counts_the_models_whose_pools_share_the_cluster() -> None:
    @pipeline
    def one(plan):
        df = plan.apply(daft.from_pydict({"x": list(range(20))}))
        return df.with_column("y", plan.udf(_Double, return_dtype=daft.DataType.int64())(df["x"]))

    @pipeline
    def two(plan):
        df = plan.apply(daft.from_pydict({"x": list(range(20))}))
        model = plan.udf(_Double, return_dtype=daft.DataType.int64())
        df = df.with_column("y", model(df["x"]))
        return df.with_column("z", plan.udf(_Double, return_dtype=daft.DataType.int64())(df["y"]))

    assert probe(one).models == 1 and probe(one).planner_options({"batch_size": 8}) == {"batch_size": 8}
    found = probe(two)
    assert found.models == 2 and found.planner_options({"batch_size": 8}) == {"models": 2, "batch_size": 8}
    # Said by the caller (a script counts its own models): theirs stands.
    assert found.planner_options({"models": 3}) == {"models": 3}


def test_the_probe_records_a_csv_or_json_read_before_the_step(tmp_path) -> None:
    # Its files lay out Daft's default (one task per file) where no footers count them.
    csv = tmp_path / "a.csv"
    csv.write_text("x\n1\n2\n")

    @pipeline
    def text(plan):
        return plan.apply(daft.read_csv(str(csv)))

    @pipeline
    def joined(plan):
        df = daft.read_csv(str(csv)).join(daft.from_pydict({"x": [1]}), on="x")
        return plan.apply(df)

    assert probe(text).text_read_paths == [str(csv)] and probe(text).parquet_paths is None
    assert probe(joined).text_read_paths == [str(csv)]  # the profile checks the DataFrame is the plain read
    assert probe(one_model_pipeline()).text_read_paths is None


def one_model_pipeline() -> Pipeline:
    @pipeline
    def build(plan):
        return plan.apply(daft.from_pydict({"x": [1, 2]}))

    return build


def test_plain_build_function_is_a_pipeline(tmp_path) -> None:
    path = _write(tmp_path, "import daft\ndef build(plan):\n    return plan.apply(daft.from_pydict({'x': [1]}))\n")
    assert load_pipeline(path).name == "build"


def test_decorator_bare_and_with_options() -> None:
    @pipeline
    def bare(plan):  # pragma: no cover - not called
        return plan

    @pipeline(batch_size=32, concurrency=3, strategy="streaming")
    def tuned(plan):  # pragma: no cover - not called
        return plan

    assert isinstance(bare, Pipeline) and bare.planner_kwargs == {}
    assert isinstance(tuned, Pipeline) and tuned.name == "tuned"
    assert tuned.planner_kwargs == {"batch_size": 32, "concurrency": 3, "strategy": "streaming"}
    # That they reach the plan a run makes, and that run options override them: test_run.py.


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("import daft\nx = 1\n", "defines no pipeline"),
        ("def build(plan)\n    pass\n", "failed to import: SyntaxError"),
        ("import no_such_module_xyz\n", "failed to import: ModuleNotFoundError"),
        ("def build(plan):\n    return 42\n", "returned int"),
        ("import daft\ndef build(plan):\n    return daft.from_pydict({'x': [1]})\n", "never calls plan.apply"),
        ("def build(plan):\n    raise ValueError('boom')\n", "raised ValueError: boom (line 2)"),
    ],
)
def test_bad_pipeline_files_give_one_line_errors(tmp_path, body: str, message: str) -> None:
    with pytest.raises(PipelineError) as info:
        probe(load_pipeline(_write(tmp_path, body)))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(PipelineError, match="does not exist"):
        load_pipeline(tmp_path / "nope.py")
    with pytest.raises(PipelineError, match="is a directory"):
        load_pipeline(tmp_path)


def test_build_result_checked(tmp_path) -> None:
    pipe = load_pipeline(_write(tmp_path, GOOD))
    assert isinstance(pipe(probe_plan := _Identity()), daft.DataFrame)
    assert probe_plan.calls == 1


class _Identity:
    def __init__(self) -> None:
        self.calls = 0

    def apply(self, df):
        self.calls += 1
        return df


def test_reading_files_swaps_only_the_read_the_probe_recorded(tmp_path) -> None:
    # Calibration's spread sample: the recorded read reads the chosen files; other reads are left alone, and the
    # caller learns whether the swap happened (if not, it samples with a limit instead of reading everything).
    import pyarrow as pa
    import pyarrow.parquet as pq

    from daftscale.pipeline import reading_files

    files = []
    for i in range(4):
        files.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(pa.table({"x": [i] * 5}), files[-1])
    with reading_files(files, files[1:2]) as swapped:
        assert daft.read_parquet(files).to_pydict()["x"] == [1] * 5
        assert len(daft.read_parquet(files[:2]).to_pydict()["x"]) == 10  # another read: as written
    assert swapped == ["1"]
    with reading_files([str(tmp_path / "other.parquet")], files[:1]) as swapped:
        daft.read_parquet(files)
    assert swapped == []
    assert len(daft.read_parquet(files).to_pydict()["x"]) == 20  # restored after the block
