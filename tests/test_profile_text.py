"""Local CSV and JSON files read here by pyarrow (daftscale.profile_text): the counts must be Daft's."""

from __future__ import annotations

import csv
import gzip
import io
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daftscale import profile_dataframe
from daftscale.profile_text import read_local_text, scan_format

_CSV_TEXT = st.text(st.sampled_from('ab ,"\n\r1'), max_size=6)


@settings(max_examples=40, deadline=None)
@given(
    records=st.lists(st.tuples(_CSV_TEXT, st.integers(-5, 5)), max_size=12),
    blank_lines=st.lists(st.integers(0, 12), max_size=3),
    line_end=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
)
def test_a_local_csv_file_is_counted_here_as_daft_counts_it(
    tmp_path_factory: pytest.TempPathFactory,
    records: list[tuple[str, int]],
    blank_lines: list[int],
    line_end: str,
    final_newline: bool,
) -> None:
    # Quoted commas, quotes and line breaks, blank lines between records, either line ending, no last line break:
    # pyarrow's count and head must be Daft's, or the plan's rows in would not be the run's.
    import daft

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=line_end).writerow(["text", "n"])
    lines = [buffer.getvalue()]
    for index, record in enumerate(records):
        if index in blank_lines:
            lines.append(line_end)
        buffer = io.StringIO()
        # Text quoted (a bare carriage return in a field would end its line for Daft and pyarrow alike).
        csv.writer(buffer, lineterminator=line_end, quoting=csv.QUOTE_NONNUMERIC).writerow(record)
        lines.append(buffer.getvalue())
    text = "".join(lines)
    if not final_newline:
        text = text.removesuffix(line_end)
    path = tmp_path_factory.mktemp("csv") / "part.csv"
    path.write_bytes(text.encode())
    df = daft.read_csv(str(path))
    local = read_local_text(df, [str(path)], 1000)
    if local is None:  # pyarrow refuses only a header with no line break after it: Daft counts that file
        assert not records and not final_newline
        return
    assert local.file_rows == (df.count_rows(),)
    if local.head is not None:
        assert local.head.to_pylist() == df.to_arrow().to_pylist()


def test_json_lines_are_counted_here_and_a_head_comes_in_daft_types(tmp_path: Path) -> None:
    import daft

    (tmp_path / "a.jsonl").write_text('{"x": 1, "tags": ["a"], "m": {"k": 1.5}}\r\n{"x": 2, "tags": [], "m": null}')
    record = '{{"x": {}, "tags": ["b", "c"], "m": {{"k": 2.0}}}}\n'
    (tmp_path / "b.jsonl").write_text("".join(record.format(i) for i in range(5)))
    paths = [str(tmp_path / "*.jsonl")]
    df = daft.read_json(paths[0])
    local = read_local_text(df, paths, 4)
    assert local is not None and local.file_rows == (2, 5) and sum(local.file_rows) == df.count_rows()
    assert local.head is not None and local.head.num_rows == 4
    everything = df.to_arrow()
    assert local.head.schema == everything.schema  # Daft's types, nested ones too
    assert all(row in everything.to_pylist() for row in local.head.to_pylist())
    # A file of one JSON array is Daft's to read.
    (tmp_path / "c.json").write_text('[{"x": 1}, {"x": 2}]')
    array = str(tmp_path / "c.json")
    assert read_local_text(daft.read_json(array), [array], 4) is None


def test_a_read_daft_parses_otherwise_is_left_to_daft(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import daft

    profile_text = sys.modules["daftscale.profile_text"]
    (tmp_path / "a.csv").write_text("x;y\n1;2\n3;4\n")
    plain = str(tmp_path / "a.csv")
    default = read_local_text(daft.read_csv(plain), [plain], 10)  # one column named "x;y" to Daft and pyarrow alike
    assert default is not None and default.file_rows == (2,) and default.head.column_names == ["x;y"]
    for options in ({"delimiter": ";"}, {"comment": "#"}, {"allow_variable_columns": True}, {"has_headers": False}):
        assert scan_format(daft.read_csv(plain, **options)) is None, options
        assert read_local_text(daft.read_csv(plain, **options), [plain], 10) is None, options
    assert scan_format(daft.read_csv(plain)) == "csv" and scan_format(daft.read_csv(plain, delimiter=",")) == "csv"
    (tmp_path / "b.csv.gz").write_bytes(gzip.compress(b"x,y\n1,2\n"))
    compressed = str(tmp_path / "b.csv.gz")
    assert read_local_text(daft.read_csv(compressed), [compressed], 10) is None
    assert read_local_text(daft.read_csv(plain), ["s3://bucket/a.csv"], 10) is None  # files elsewhere: Daft reads
    # A column the read computes: the files are counted here, the head is Daft's to read.
    computed = daft.read_csv(plain).with_column("z", daft.col("x;y") + "!")
    local = read_local_text(computed, [plain], 10)
    assert local is not None and local.file_rows == (2,) and local.head is None
    monkeypatch.setattr(profile_text, "LOCAL_TEXT_MAX_BYTES", 4)
    assert read_local_text(daft.read_csv(plain), [plain], 10) is None


def test_files_daft_reads_itself_keep_rows_estimated_from_their_bytes(tmp_path: Path) -> None:
    # Another delimiter: Daft counts the rows, and each file's share of them is its share of the bytes.
    import daft

    rows = [50, 400, 120, 1_000, 30]
    for i, n in enumerate(rows):
        (tmp_path / f"part-{i}.csv").write_text("id;text\n" + "".join(f"{i:02d}{j:06d};some words\n" for j in range(n)))
    glob = [str(tmp_path / "*.csv")]
    p = profile_dataframe(daft.read_csv(glob[0], delimiter=";"), text_paths=glob)
    assert p.rows == sum(rows) and sum(p.file_rows) == sum(rows) and "share of the bytes" in p.notes[-1]
    assert all(abs(estimated - n) <= 0.05 * n + 2 for estimated, n in zip(p.file_rows, rows, strict=True))
