"""CSV and JSON output on Ray: a script ending in ``write_csv``/``write_json`` writes every row with nothing
extra installed, and a column Daft's writer cannot take is refused, named, before the query runs.

daftscale once refused CSV and JSON on Ray unless pyiceberg was installed; Daft 0.7.26's native writers
need nothing. What does fail, on either runner, is a column type those writers do not take: the tests
below try Daft itself on each type, so the refusal stays exactly as wide as Daft's failure.
"""

from __future__ import annotations

import datetime
import decimal
import json
import os
from pathlib import Path

import daft
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from daft import DataType, col

from daftscale.output import OutputError, OutputTarget, write_output
from daftscale.run import run

pytestmark = pytest.mark.ray

ROWS = 600

SCRIPT = """
import daft
from daft import col

@daft.cls(max_concurrency=2)
class Model:
    def __init__(self):
        self.scale = 3

    @daft.method.batch(return_dtype=daft.DataType.int64(), batch_size=25)
    def __call__(self, ids: daft.Series):
        return [i * self.scale for i in ids.to_pylist()]

df = daft.read_parquet({source!r})
df = df.with_column("y", Model()(col("id")))
df.write_{fmt}({out!r})
"""


def _read_back(out: Path, fmt: str) -> list[tuple[int, str, int]]:
    files = sorted(p for p in out.rglob(f"*.{fmt}"))
    rows: list[tuple[int, str, int]] = []
    for path in files:
        if fmt == "csv":
            rows += [(r["id"], r["s"], r["y"]) for r in pacsv.read_csv(path).to_pylist()]
        else:
            for line in path.read_text().splitlines():
                record = json.loads(line)
                rows.append((record["id"], record["s"], record["y"]))
    return sorted(rows)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_script_ending_in_write_csv_or_json_writes_every_row_on_ray(tmp_path, fmt: str) -> None:
    import pyarrow.parquet as pq

    for i in range(4):  # four files, so the rows arrive from several tasks and both actors
        ids = list(range(i * ROWS // 4, (i + 1) * ROWS // 4))
        pq.write_table(pa.table({"id": ids, "s": [f'row {n}, "quoted"' for n in ids]}), tmp_path / f"in-{i}.parquet")
    out = tmp_path / "out"
    script = tmp_path / "job.py"
    script.write_text(SCRIPT.format(source=str(tmp_path / "in-*.parquet"), fmt=fmt, out=str(out)))
    report = run(str(script), runner="ray", batch_size=25, concurrency=2, progress=False)
    assert report.runner == "ray" and report.status == "ok"
    assert report.output["format"] == fmt and report.output["rows"] == ROWS == report.rows_out
    assert _read_back(out, fmt) == [(n, f'row {n}, "quoted"', 3 * n) for n in range(ROWS)]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("in-")) == ["job.py", "out"]


N = 4
SOURCE = {
    "id": list(range(N)),
    "s": ["a"] * N,
    "f": [[1.0, 2.0]] * N,
    "b": [b"ab"] * N,
    "ts": [datetime.datetime(2024, 1, 2, 3, 4)] * N,
    "d": [datetime.date(2024, 1, 2)] * N,
    "dur": [datetime.timedelta(seconds=3)] * N,
    "dec": [decimal.Decimal("1.5")] * N,
    "st": [{"k": 1}] * N,
    "obj": [object()] * N,
}
# Each column as one type: the expression that makes it from SOURCE.
TYPES = {
    "string": col("s"),
    "binary": col("b"),
    "timestamp": col("ts"),
    "date": col("d"),
    "duration": col("dur"),
    "decimal": col("dec"),
    "list": col("f"),
    "fixed_size_list": col("f").cast(DataType.fixed_size_list(DataType.float64(), 2)),
    "struct": col("st"),
    "embedding": col("f").cast(DataType.embedding(DataType.float32(), 2)),
    "python": col("obj"),
}
REFUSED = {
    "csv": {"list", "fixed_size_list", "struct", "embedding", "python"},
    "json": {"binary", "duration", "embedding", "python"},
}


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_daftscale_refuses_exactly_the_columns_daft_cannot_write(tmp_path, fmt: str) -> None:
    source = daft.from_pydict(SOURCE)
    accepted = [name for name in TYPES if name not in REFUSED[fmt]]
    # Every type let through is written by daftscale, in one write, every row.
    df = source.select(*(TYPES[name].alias(name) for name in accepted))
    assert write_output(df, OutputTarget(str(tmp_path / "ok"), fmt)).rows == N

    @daft.func(return_dtype=DataType.int64())
    def must_not_run(x: int) -> int:
        raise AssertionError("the query ran before the refusal")

    for name in sorted(REFUSED[fmt]):
        df = source.select(col("id"), TYPES[name].alias(name))
        # Daft itself fails on it (so the refusal is not a false one)...
        with pytest.raises(Exception):  # noqa: B017 (Daft raises a different error per type and runner)
            getattr(df, f"write_{fmt}")(str(tmp_path / f"daft-{name}"))
        # ...and daftscale says so in one line before any of the query runs, leaving nothing behind.
        doomed = df.with_column("late", must_not_run(col("id")))
        target = tmp_path / f"out-{name}"
        with pytest.raises(OutputError, match=rf"cannot write column '{name}' \(.*\) as {fmt.upper()}: .*Parquet"):
            write_output(doomed, OutputTarget(str(target), fmt))
        assert not target.exists()
    assert not [p for p in os.listdir(tmp_path) if ".daftscale-staging-" in p]
