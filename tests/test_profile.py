"""Profiling Parquet from footers, DataFrames and numbers, and every bad input a user can hand us."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from daftscale import ProfileError, profile, profile_dataframe, profile_parquet


def _write(path: Path, table: pa.Table, **kwargs: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **kwargs)
    return path


def test_two_thousand_small_files_counted_exactly_from_footers(tmp_path: Path) -> None:
    expected = 0
    for i in range(2_000):
        rows = 1 + (i * 7919) % 37  # uneven, deterministic
        expected += rows
        _write(tmp_path / f"shard={i % 10}" / f"part-{i:05d}.parquet", pa.table({"id": list(range(rows))}))
    (tmp_path / "_SUCCESS").write_text("")
    started = time.perf_counter()
    p = profile_parquet(str(tmp_path))
    elapsed = time.perf_counter() - started
    assert p.files == 2_000
    assert p.rows == expected
    assert p.row_groups == 2_000
    assert p.max_rows_per_file == 37 and p.min_rows_per_file == 1
    print(f"profiled 2,000 footers in {elapsed:.2f} s")
    # The README's claim: footers only, in parallel, so tens of thousands of files take seconds. 2,000
    # local footers take well under a second on an idle machine; 10 ms each (20 s) is the generous bound
    # a loaded 2-core machine still meets, and reading the data pages would not.
    assert elapsed < 2_000 * 0.010


def test_columns_bytes_and_heavy_light(tmp_path: Path) -> None:
    n = 200
    table = pa.table(
        {
            "path": [f"s3://bucket/images/{i:08d}.jpg" for i in range(n)],
            "blob": [os.urandom(2048) for _ in range(n)],
            "emb": pa.array([[0.5] * 64 for _ in range(n)], type=pa.list_(pa.float32(), 64)),
            "tags": [["a", "b"] for _ in range(n)],
        }
    )
    p = profile_parquet(str(_write(tmp_path / "t.parquet", table, row_group_size=50)))
    assert p.rows == n and p.files == 1 and p.row_groups == 4
    by_name = {c.name: c for c in p.columns}
    assert set(p.heavy_columns) == {"blob", "emb"}
    assert not by_name["path"].heavy and not by_name["tags"].heavy
    assert by_name["blob"].uncompressed_bytes >= n * 2048
    assert by_name["blob"].compressed_bytes > 0
    assert p.uncompressed_bytes == sum(c.uncompressed_bytes for c in p.columns)
    assert p.bytes_per_row == pytest.approx(p.uncompressed_bytes / n)
    light = p.select(["path"])
    assert light.heavy_columns == [] and light.bytes_per_row < 100
    with pytest.raises(ProfileError, match="not in the data"):
        p.select(["nope"])


def test_large_strings_are_heavy_by_size(tmp_path: Path) -> None:
    # Distinct documents: Parquet footers report sizes after dictionary encoding, so identical
    # strings would look small (a documented limit of footer-only profiling).
    table = pa.table({"doc": [os.urandom(50_000).hex() for _ in range(20)]})
    p = profile_parquet(str(_write(tmp_path / "docs.parquet", table, compression="none")))
    assert p.heavy_columns == ["doc"]


def test_globs_lists_and_uris(tmp_path: Path) -> None:
    for i in range(3):
        _write(tmp_path / f"a{i}.parquet", pa.table({"x": [1, 2, 3]}))
    _write(tmp_path / "b.parquet", pa.table({"x": [1]}))
    assert profile_parquet(str(tmp_path / "a*.parquet")).rows == 9
    assert profile_parquet([str(tmp_path / "a0.parquet"), str(tmp_path / "b.parquet")]).rows == 4
    assert profile_parquet(f"file://{tmp_path}").rows == 10


def _mkdir(path: Path) -> str:
    path.mkdir()
    return str(path)


def _put(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: str(d / "missing"), "path not found"),
        (lambda d: _mkdir(d / "empty"), "holds no data files"),
        (lambda d: _put(d / "x.parquet", b"hello, not parquet"), "not a Parquet file"),
        (lambda d: _put(d / "tiny.parquet", b"PAR1"), "not a Parquet file"),
        (lambda d: _put(d / "data.csv", b"a,b\n1,2\n" * 10), "not a Parquet file"),
        (lambda d: str(d / "*.nothing"), "no files match"),
        (lambda d: "", "empty data path"),
    ],
)
def test_bad_paths_have_one_line_errors(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        profile_parquet(make(tmp_path))
    assert "\n" not in str(info.value)


def test_corrupt_footer(tmp_path: Path) -> None:
    good = _write(tmp_path / "good.parquet", pa.table({"x": list(range(100))}))
    data = bytearray(good.read_bytes())
    # Keep the magic bytes but scramble the footer length and metadata before them.
    data[-40:-4] = b"\xff" * 36
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(data))
    with pytest.raises(ProfileError, match="corrupt Parquet footer"):
        profile_parquet(str(tmp_path))


class _FailingOpen(pafs.FileSystemHandler):
    """Local files that list but cannot be opened, as on a share without read permission or over a dropped
    connection (the tests may run as root, who reads any local file): pyarrow's own handler interface."""

    def __init__(self, error: OSError) -> None:
        self.error = error
        self.local = pafs.LocalFileSystem()

    def get_type_name(self) -> str:
        return "failing-open"

    def normalize_path(self, path: str) -> str:
        return path

    def equals(self, other: object) -> bool:
        return self is other

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.local.get_file_info(selector)

    def open_input_file(self, path: str) -> object:
        raise self.error

    open_input_stream = open_input_file

    def _read_only(self, *args: object) -> None:
        raise NotImplementedError("read-only test filesystem")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = delete_file = _read_only
    move = copy_file = open_output_stream = open_append_stream = _read_only


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (PermissionError(13, "Permission denied"), "PermissionError"),
        (ConnectionResetError(104, "Connection reset by peer"), "ConnectionResetError"),
    ],
    ids=["permission", "network"],
)
def test_unreadable_file_is_not_called_corrupt(tmp_path: Path, error: OSError, words: str) -> None:
    _write(tmp_path / "good.parquet", pa.table({"x": list(range(100))}))
    fs = pafs.PyFileSystem(_FailingOpen(error))
    with pytest.raises(ProfileError) as info:
        profile_parquet(str(tmp_path), filesystem=fs)
    message = str(info.value)
    assert "corrupt" not in message
    assert message.startswith(f"cannot read {tmp_path / 'good.parquet'} ({words}")
    assert "that you may read it" in message
    # The same file through a working filesystem profiles fine: the file was never the problem.
    assert profile_parquet(str(tmp_path), filesystem=pafs.LocalFileSystem()).rows == 100


def test_zero_rows(tmp_path: Path) -> None:
    _write(tmp_path / "empty.parquet", pa.table({"x": pa.array([], type=pa.int64())}))
    with pytest.raises(ProfileError, match="zero rows"):
        profile_parquet(str(tmp_path))


def test_profile_from_numbers_and_overrides(tmp_path: Path) -> None:
    p = profile(rows=1_000_000, bytes_per_row=200)
    assert (p.rows, p.bytes_per_row, p.source) == (1_000_000, 200, "numbers")
    _write(tmp_path / "s.parquet", pa.table({"x": list(range(10))}))
    scaled = profile(str(tmp_path), rows=10_000_000)
    assert scaled.rows == 10_000_000 and scaled.files == 1
    with pytest.raises(ProfileError, match="nothing to profile"):
        profile()


@pytest.mark.ray
def test_profile_dataframe() -> None:
    import daft

    df = daft.from_pydict({"path": [f"img/{i}.jpg" for i in range(300)], "blob": [b"\0" * 1000] * 300})
    p = profile_dataframe(df)
    assert p.rows == 300
    assert p.heavy_columns == ["blob"]
    assert p.bytes_per_row > 1000
    with pytest.raises(ProfileError, match="zero rows"):
        profile_dataframe(df.where(df["path"] == "nope"))


def test_a_csv_or_json_read_knows_its_files_and_their_rows(tmp_path: Path) -> None:
    # No footers count their rows, but Daft runs one task per file: the simulator lays Daft's default out by them.
    import daft

    rows = [50, 400, 120, 1_000, 30]
    for i, n in enumerate(rows):
        lines = "".join(f"{i * 10_000 + j:06d},some words here\n" for j in range(n))
        (tmp_path / f"part-{i}.csv").write_text("id,text\n" + lines)
        records = "".join(f'{{"id": "{j:06d}", "text": "some words"}}\n' for j in range(n))
        (tmp_path / f"part-{i}.jsonl").write_text(records)
    for glob, read in ((tmp_path / "*.csv", daft.read_csv), (tmp_path / "*.jsonl", daft.read_json)):
        p = profile_dataframe(read(str(glob)).select("id"), text_paths=[str(glob)])
        assert p.rows == sum(rows) and p.files == 5 and sum(p.file_rows) == sum(rows)
        assert (p.min_rows_per_file, p.max_rows_per_file) == (min(p.file_rows), max(p.file_rows))
        assert p.file_rows == tuple(rows) and "counted here" in p.notes[-1]  # local files: read_local_text
    # Anything but a plain read of those keeps no layout it cannot know.
    csv = [str(tmp_path / "*.csv")]
    assert profile_dataframe(daft.read_csv(csv).where(daft.col("id") > 5), text_paths=csv).files == 0
    assert profile_dataframe(daft.read_csv(csv)).files == 0  # the probe saw no read
    assert profile_dataframe(daft.from_pydict({"x": list(range(10))})).file_rows == ()


@pytest.mark.ray
def test_a_join_of_parquet_reads_is_counted_and_sized_by_the_footers(tmp_path: Path) -> None:
    import daft

    _write(tmp_path / "a.parquet", pa.table({"key": [i % 3 for i in range(300)], "uri": ["s3://b/k.jpg"] * 300}))
    _write(tmp_path / "keys.parquet", pa.table({"key": [0, 1, 2], "label": ["x" * 40, "y" * 40, "z" * 40]}))
    left, right = profile_parquet(str(tmp_path / "a.parquet")), profile_parquet(str(tmp_path / "keys.parquet"))
    joined = daft.read_parquet(str(tmp_path / "a.parquet")).join(
        daft.read_parquet(str(tmp_path / "keys.parquet")), on="key"
    )
    p = profile_dataframe(joined.where(daft.col("key") > 0), read_profiles=[left, right])
    assert p.rows == 200  # counted by Daft: the filter keeps two keys of three
    assert [c.name for c in p.columns] == joined.column_names
    assert "footers of the 2 Parquet read(s)" in p.notes[0]
    # Each column keeps its file's bytes per row (the label is the key table's, repeated on every joined row).
    label = next(c for c in p.columns if c.name == "label")
    assert label.bytes_per_row(p.rows) == pytest.approx(right.columns[1].uncompressed_bytes / right.rows)
    # A column computed on the way is not in any footer: Daft samples the rows.
    computed = joined.with_column("uri_length", daft.col("uri").length())
    assert "sample" in profile_dataframe(computed, read_profiles=[left, right]).notes[0]


@pytest.mark.ray
def test_daft_logical_types_written_to_parquet_are_heavy(tmp_path: Path) -> None:
    import daft
    import numpy as np

    df = daft.from_pydict(
        {
            "t": [np.zeros((4, 4), dtype=np.float32) for _ in range(10)],
            "e": [np.zeros(8, dtype=np.float32) for _ in range(10)],
            "id": list(range(10)),
        }
    )
    df = df.with_column("e", df["e"].cast(daft.DataType.embedding(daft.DataType.float32(), 8)))
    df.write_parquet(str(tmp_path / "out"))
    p = profile_parquet(str(tmp_path / "out"))
    assert p.rows == 10
    assert set(p.heavy_columns) == {"t", "e"}


@pytest.mark.ray
def test_an_in_memory_table_is_profiled_from_its_partitions_with_no_query(ray_cluster) -> None:
    # On Ray each profile query pays a start of its own (seconds); a table built in memory answers from its
    # partitions, which must agree with what the queries return.
    import daft

    from daftscale.profile import _count_and_head, _materialized_count_and_head

    table = daft.from_arrow([pa.table({"x": list(range(i * 700, (i + 1) * 700)), "s": ["v"] * 700}) for i in range(3)])
    answered = _materialized_count_and_head(table, 500)
    assert answered is not None
    rows, head = answered
    queried_rows, queried_head = _count_and_head(table, 500)
    # Ray's limit takes its rows from whichever partition comes first (any one of them); the partitions' own head
    # is the first partition's.
    assert rows == queried_rows == 2_100 and head.schema == queried_head.schema
    assert head.num_rows == queried_head.num_rows == 500 and head.column("x").to_pylist() == list(range(500))
    assert profile_dataframe(table).rows == 2_100
    # Anything computed on the table is not in memory yet: it is counted by Daft.
    assert _materialized_count_and_head(table.with_column("y", daft.col("x") + 1), 500) is None
    assert _materialized_count_and_head(table.where(daft.col("x") > 5), 500) is None


@pytest.mark.ray
def test_local_csv_files_are_counted_on_ray_and_their_head_read_here(ray_cluster, tmp_path: Path) -> None:
    # A limit on Ray starts Daft's counter actor (about 1 s); a plain read of local files has its head read by
    # Daft's native engine in this process while Ray counts.
    import daft

    from daftscale.profile import _count_and_local_head

    for i in range(3):
        (tmp_path / f"part-{i}.csv").write_text("x,s\n" + "".join(f"{i * 400 + j},row {j}\n" for j in range(400)))
    paths = [str(tmp_path / "*.csv")]
    df = daft.read_csv(paths[0])
    answered = _count_and_local_head(df, 100, paths)
    assert answered is not None
    rows, head = answered
    assert rows == 1_200 and head.num_rows == 100 and head.column_names == ["x", "s"]
    profile = profile_dataframe(df, text_paths=paths)
    assert profile.rows == 1_200 and profile.file_rows == (400, 400, 400)  # counted here (read_local_csv)

    @daft.func
    def shout(s: str) -> str:
        return s.upper()

    # Nothing of the user's runs in this process, and files elsewhere are read by the cluster.
    assert _count_and_local_head(df.with_column("t", shout(df["s"])), 100, paths) is None
    assert _count_and_local_head(df, 100, ["s3://bucket/part-*.csv"]) is None


def test_a_local_file_listing_is_counted_and_sampled_here(tmp_path: Path) -> None:
    # daft.from_glob_path lists files: on Ray its head would be a limit query (1.2 s on 1,500 files).
    import daft

    from daftscale.profile import _local_listing

    for i in range(30):
        (tmp_path / f"{i:03d}.bin").write_bytes(b"x" * (i + 1))
    listing = daft.from_glob_path(str(tmp_path / "*.bin"))
    answered = _local_listing(listing, 10)
    assert answered is not None
    rows, head = answered
    assert rows == 30 and head.num_rows == 10 and set(head.column_names) == {"path", "size", "num_rows"}
    assert _local_listing(listing.select("path", "size"), 10)[0] == 30
    profile = profile_dataframe(listing)
    assert profile.rows == 30 and not profile.heavy_columns
    # Anything computed from the paths (their bytes), or a filter, is the cluster's to run.
    download = daft.functions.download(daft.col("path"))
    assert _local_listing(listing.with_column("data", download), 10) is None
    assert _local_listing(listing.with_column("path", download), 10) is None
    assert _local_listing(listing.where(daft.col("size") > 3), 10) is None
    assert _local_listing(daft.from_pydict({"path": ["a"]}), 10) is None
