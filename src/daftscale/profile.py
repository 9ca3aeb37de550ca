"""What the data looks like: rows, files, bytes per column, heavy or light — from Parquet footers only.

Three sources, one result (:class:`DataProfile`):

- Parquet paths, directories and globs, local or on any filesystem pyarrow reads: only the footers are
  read, in parallel, so tens of thousands of files take seconds;
- a Daft DataFrame: its schema, its row count and a small sample for bytes per row;
- plain numbers (rows and bytes per row) for data that does not exist yet.

A :class:`UdfProfile` (seconds per row, fixed seconds per call, memory per row) comes from running a few
batches of the real UDF; see :func:`daftscale.udfprofile.profile_udf`.
"""

from __future__ import annotations

import fnmatch
import math
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from daftscale.config import (
    HEAVY_BYTES_PER_ROW,
    HEAVY_LIST_BYTES_PER_ROW,
    format_bytes,
    require_positive_int,
    require_positive_number,
)
from daftscale.errors import ProfileError
from daftscale.profile_text import is_local_path, listed_files, read_local_text
from daftscale.scaling_plan import calls_udf, plan_operators

if TYPE_CHECKING:
    import daft
    import pyarrow as pa
    import pyarrow.fs as pafs

# Footer reads are I/O bound (and pyarrow releases the GIL), so far more threads than cores pay off.
FOOTER_READ_THREADS = 64

# Rows sampled from a DataFrame to estimate bytes per row: enough to average out row-size variation.
DATAFRAME_SAMPLE_ROWS = 1000

_HEAVY_NAME_HINTS = ("image", "tensor", "embedding", "audio", "video")


@dataclass(frozen=True)
class ColumnProfile:
    """One top-level column: its type, its total bytes, and whether it is heavy data."""

    name: str
    type: str
    compressed_bytes: int
    uncompressed_bytes: int
    heavy: bool
    why: str

    def bytes_per_row(self, rows: int) -> float:
        return self.uncompressed_bytes / rows if rows else 0.0


@dataclass(frozen=True)
class DataProfile:
    """What the planner needs to know about the data arriving at the scaling step."""

    source: str
    rows: int
    bytes_per_row: float
    files: int = 0
    row_groups: int = 0
    compressed_bytes: int = 0
    uncompressed_bytes: int = 0
    columns: tuple[ColumnProfile, ...] = ()
    min_rows_per_file: int = 0
    max_rows_per_file: int = 0
    heavy_hint: bool | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Rows of each input file in order, when the footers gave them (not in to_dict: one number per file). The
    # simulator lays Daft's default out by them: without a shuffle, the largest file's task finishes last.
    file_rows: tuple[int, ...] = field(default=(), repr=False)
    # The files' bytes on disk, when the footers were read (not in to_dict): the measure Daft sizes its scan
    # tasks by (times its Parquet inflation factor), see daftscale.plan_formulas.merged_scan_task_bytes.
    file_bytes: int = field(default=0, repr=False)

    @property
    def heavy_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.heavy]

    @property
    def total_bytes(self) -> int:
        return int(self.uncompressed_bytes or self.rows * self.bytes_per_row)

    @property
    def file_row_skew(self) -> float:
        """Largest file's rows over the mean (1.0 = even files); 1.0 when unknown."""
        if not self.files or not self.rows:
            return 1.0
        return self.max_rows_per_file / (self.rows / self.files)

    def select(self, names: Sequence[str]) -> DataProfile:
        """The profile restricted to the columns a UDF reads (rows and files unchanged)."""
        known = {c.name: c for c in self.columns}
        missing = [n for n in names if n not in known]
        if missing:
            raise ProfileError(
                f"column(s) {', '.join(missing)} not in the data: choose from {', '.join(known) or 'none'}"
            )
        chosen = tuple(known[n] for n in names)
        uncompressed = sum(c.uncompressed_bytes for c in chosen)
        return replace(
            self,
            columns=chosen,
            compressed_bytes=sum(c.compressed_bytes for c in chosen),
            uncompressed_bytes=uncompressed,
            bytes_per_row=uncompressed / self.rows if self.rows else 0.0,
        )

    def describe(self) -> str:
        text = f"{self.rows:,} rows, {format_bytes(self.bytes_per_row)} per row"
        if self.files:
            text += f", {self.files:,} file{'s' if self.files != 1 else ''}, {self.row_groups:,} row groups"
        if self.heavy_columns:
            text += f", heavy columns: {', '.join(self.heavy_columns)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("file_rows", None)
        data["heavy_columns"] = self.heavy_columns
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataProfile:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        fields["columns"] = tuple(ColumnProfile(**c) for c in data.get("columns", ()))
        fields["notes"] = tuple(data.get("notes", ()))
        return cls(**fields)


@dataclass(frozen=True)
class UdfProfile:
    """Measured cost of the user's UDF: ``seconds(batch of n) ≈ seconds_per_batch + n * seconds_per_row``."""

    seconds_per_row: float
    seconds_per_batch: float
    memory_per_row_bytes: float | None = None
    rows_sampled: int = 0
    batches: int = 0

    def batch_seconds(self, rows: int) -> float:
        return self.seconds_per_batch + self.seconds_per_row * rows

    def overhead_share(self, batch_size: int) -> float:
        """Share of an actor's time spent on the fixed per-call cost at this batch size."""
        total = self.batch_seconds(batch_size)
        return self.seconds_per_batch / total if total > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UdfProfile:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


# ---------------------------------------------------------------------------------------------------
# Column classification


def classify_column(
    name: str, arrow_type: pa.DataType, bytes_per_row: float, metadata: dict[bytes, bytes] | None = None
) -> tuple[bool, str]:
    """Whether a column is heavy data, and why, from its Arrow type, field metadata and average size.

    Daft writes its Image, Tensor and Embedding types to Parquet as plain Arrow storage (a struct, a
    list) with the logical type in the field's ``ARROW:extension:metadata``, so that is read too.

    >>> import pyarrow as pa
    >>> classify_column("path", pa.string(), 40.0)
    (False, 'string, 40 B/row')
    >>> classify_column("img", pa.binary(), 150_000.0)
    (True, 'binary column')
    >>> classify_column("emb", pa.list_(pa.float32(), 384), 1536.0)
    (True, 'fixed-size list (tensor/embedding)')
    >>> classify_column("tags", pa.list_(pa.string()), 60.0)
    (False, 'list, 60 B/row')
    """
    import pyarrow as pa

    size = f"{format_bytes(bytes_per_row)}/row"
    serialized = (metadata or {}).get(b"ARROW:extension:metadata", b"")
    if isinstance(arrow_type, pa.ExtensionType):
        # Where Daft's extension type is registered with pyarrow the metadata moves into the type.
        serialized = arrow_type.__arrow_ext_serialize__() or serialized
    logical = serialized.decode("utf-8", "replace").lower()
    for hint in _HEAVY_NAME_HINTS:
        if f'"{hint}' in logical:
            return True, f"{hint} column (Daft logical type)"
    extension = getattr(arrow_type, "extension_name", None)
    if isinstance(arrow_type, pa.ExtensionType) or extension:
        ext = str(extension or arrow_type).lower()
        if any(hint in ext for hint in _HEAVY_NAME_HINTS):
            return True, f"{ext} extension type"
        arrow_type = arrow_type.storage_type
    if (
        pa.types.is_binary(arrow_type)
        or pa.types.is_large_binary(arrow_type)
        or pa.types.is_fixed_size_binary(arrow_type)
        or getattr(pa.types, "is_binary_view", lambda _t: False)(arrow_type)
    ):
        return True, "binary column"
    if pa.types.is_fixed_size_list(arrow_type):
        return True, "fixed-size list (tensor/embedding)"
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type) or pa.types.is_map(arrow_type):
        if bytes_per_row >= HEAVY_LIST_BYTES_PER_ROW:
            return True, f"large list, {size}"
        return False, f"list, {size}"
    if bytes_per_row >= HEAVY_BYTES_PER_ROW:
        return True, f"{size} ≥ {format_bytes(HEAVY_BYTES_PER_ROW)}/row"
    kind = "string" if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) else str(arrow_type)
    return False, f"{kind}, {size}"


def _is_heavy_daft_type(dtype: Any) -> bool:
    text = str(dtype).lower()
    return any(hint in text for hint in _HEAVY_NAME_HINTS)


# ---------------------------------------------------------------------------------------------------
# Parquet


def _resolve_filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    import pyarrow.fs as pafs

    if not is_local_path(path):
        try:
            return pafs.FileSystem.from_uri(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / ArrowNotImplementedError / OSError
            raise ProfileError(f"cannot open {path}: {exc}: check the URI scheme and credentials") from exc
    local = path[len("file://") :] if path.startswith("file://") else path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))


def _is_data_file(base_name: str) -> bool:
    # Spark/Hive write _SUCCESS and _metadata, editors leave dotfiles: never data.
    return not (base_name.startswith("_") or base_name.startswith("."))


def list_parquet_files(
    paths: str | Sequence[str], *, filesystem: pafs.FileSystem | None = None
) -> tuple[pafs.FileSystem, list[str]]:
    """Expand files, directories (recursively) and globs into a sorted list of file paths (on ``filesystem``
    when given, else the one each path's scheme names)."""
    import pyarrow.fs as pafs

    items = [paths] if isinstance(paths, str) else list(paths)
    if not items:
        raise ProfileError("no data path given: pass a Parquet file, directory or glob, or --rows")
    given = filesystem
    files: list[str] = []
    for item in items:
        if not str(item).strip():
            raise ProfileError("empty data path: pass a Parquet file, directory or glob")
        fs, path = (given, str(item)) if given is not None else _resolve_filesystem(str(item))
        filesystem = filesystem or fs
        if any(ch in path for ch in "*?["):
            base = path[: min(path.find(ch) for ch in "*?[" if ch in path)].rsplit("/", 1)[0] or "/"
            found = _walk(fs, base, allow_missing=True)
            matched = [f for f in found if fnmatch.fnmatchcase(f, path) and _is_data_file(os.path.basename(f))]
            if not matched:
                raise ProfileError(f"no files match {item}: check the pattern, e.g. 'data/*.parquet'")
            files.extend(matched)
            continue
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ProfileError(f"path not found: {item}: check the spelling, or pass --rows for planned data")
        if info.type == pafs.FileType.File:
            files.append(path)
            continue
        found = [f for f in _walk(fs, path) if _is_data_file(os.path.basename(f))]
        if not found:
            raise ProfileError(f"directory {item} holds no data files: point at the folder with the Parquet files")
        files.extend(found)
    assert filesystem is not None
    return filesystem, sorted(set(files))


def _walk(fs: pafs.FileSystem, base: str, *, allow_missing: bool = False) -> list[str]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(base, recursive=True, allow_not_found=allow_missing)
    try:
        infos = fs.get_file_info(selector)
    except OSError as exc:
        raise ProfileError(f"cannot list {base}: {exc}: check the path and permissions") from exc
    return [i.path for i in infos if i.type == pafs.FileType.File and not _in_hidden_dir(i.path, base)]


def _in_hidden_dir(path: str, base: str) -> bool:
    relative = path[len(base) :].strip("/").split("/")[:-1]
    return any(not _is_data_file(part) for part in relative)


@dataclass
class _FileFooter:
    rows: int
    row_groups: int
    schema: pa.Schema
    compressed: dict[str, int]
    uncompressed: dict[str, int]
    size: int = 0  # bytes on disk


# pyarrow raises OSError both for failed reads and for footers it cannot parse ("Couldn't deserialize
# thrift"); a read that failed carries an errno or one of these words (S3 and GCS errors).
_IO_ERROR_WORDS = ("Permission denied", "AWS Error", "network", "Network", "connection", "Connection", "timed out")


def _is_io_error(exc: BaseException) -> bool:
    """True for an error reading the file (permissions, a vanished file, the network), not its content.

    >>> _is_io_error(PermissionError(13, "Permission denied")), _is_io_error(OSError("Couldn't deserialize thrift"))
    (True, False)
    """
    if isinstance(exc, (PermissionError, FileNotFoundError, ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno is not None:
        return True
    return any(word in str(exc) for word in _IO_ERROR_WORDS)


def _read_footer(fs: pafs.FileSystem, path: str) -> _FileFooter:
    import pyarrow.parquet as pq

    try:
        with fs.open_input_file(path) as handle:
            size = handle.size()
            if size < 12:
                raise ProfileError(f"{path} is not a Parquet file ({size} bytes): remove it or point at Parquet data")
            handle.seek(size - 4)
            if handle.read(4) != b"PAR1":
                raise ProfileError(
                    f"{path} is not a Parquet file (no PAR1 footer): remove it from the path or glob, "
                    "or convert it to Parquet"
                )
            try:
                metadata = pq.read_metadata(handle)
                schema = metadata.schema.to_arrow_schema()
            except Exception as exc:  # thrift errors and ArrowInvalid for a corrupt footer, or a read that failed
                if _is_io_error(exc):
                    raise
                raise ProfileError(
                    f"corrupt Parquet footer in {path} ({type(exc).__name__}: {exc}): rewrite or remove the file"
                ) from exc
    except ProfileError:
        raise
    except Exception as exc:  # opening or reading the file failed: permissions, a vanished file, the network
        raise ProfileError(
            f"cannot read {path} ({type(exc).__name__}: {exc}): check that it exists, that you may read it, "
            "and the connection to its storage, then try again"
        ) from exc
    compressed: dict[str, int] = {}
    uncompressed: dict[str, int] = {}
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        for col in range(group.num_columns):
            chunk = group.column(col)
            top = chunk.path_in_schema.split(".", 1)[0]
            compressed[top] = compressed.get(top, 0) + int(chunk.total_compressed_size)
            uncompressed[top] = uncompressed.get(top, 0) + int(chunk.total_uncompressed_size)
    return _FileFooter(metadata.num_rows, metadata.num_row_groups, schema, compressed, uncompressed, size)


def profile_parquet(
    paths: str | Sequence[str], *, threads: int = FOOTER_READ_THREADS, filesystem: pafs.FileSystem | None = None
) -> DataProfile:
    """Profile Parquet files from their footers only (no data pages are read).

    Args:
        paths: a file, a directory (searched recursively), a glob such as ``"data/*.parquet"``, a URI
            pyarrow understands (``s3://...``), or a list of these.
        threads: footers read at once.
        filesystem: a pyarrow filesystem to read ``paths`` through (e.g. an ``S3FileSystem`` with your own
            credentials); default: the one each path's scheme names, local files for plain paths.

    Raises:
        ProfileError: the path is missing or empty, a file cannot be read (permissions, network), is not
            Parquet or has a corrupt footer, or there are no rows.

    Examples:
        >>> import os, tempfile, pyarrow as pa, pyarrow.parquet as pq
        >>> folder = tempfile.mkdtemp()
        >>> for i in range(3):
        ...     pq.write_table(pa.table({"path": [f"s3://b/{i}/{j}.jpg" for j in range(100)]}),
        ...                    os.path.join(folder, f"part-{i}.parquet"))
        >>> p = profile_parquet(folder)
        >>> p.rows, p.files, p.heavy_columns
        (300, 3, [])
    """
    fs, files = list_parquet_files(paths, filesystem=filesystem)
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        footers = list(pool.map(lambda f: _read_footer(fs, f), files))
    rows = sum(f.rows for f in footers)
    source = paths if isinstance(paths, str) else ", ".join(paths)
    if rows == 0:
        raise ProfileError(f"{source} has zero rows in {len(files)} file(s): point at data with rows")
    schema = _merge_schemas(footers)
    compressed = _sum_dicts(f.compressed for f in footers)
    uncompressed = _sum_dicts(f.uncompressed for f in footers)
    columns = []
    for arrow_field in schema:
        raw = uncompressed.get(arrow_field.name, 0)
        heavy, why = classify_column(arrow_field.name, arrow_field.type, raw / rows, arrow_field.metadata)
        columns.append(
            ColumnProfile(
                name=arrow_field.name,
                type=str(arrow_field.type),
                compressed_bytes=compressed.get(arrow_field.name, 0),
                uncompressed_bytes=raw,
                heavy=heavy,
                why=why,
            )
        )
    total_uncompressed = sum(uncompressed.values())
    file_rows = [f.rows for f in footers]
    return DataProfile(
        source=str(source),
        rows=rows,
        bytes_per_row=total_uncompressed / rows,
        files=len(files),
        row_groups=sum(f.row_groups for f in footers),
        compressed_bytes=sum(compressed.values()),
        uncompressed_bytes=total_uncompressed,
        columns=tuple(columns),
        min_rows_per_file=min(file_rows),
        max_rows_per_file=max(file_rows),
        file_rows=tuple(file_rows),
        file_bytes=sum(f.size for f in footers),
    )


def _merge_schemas(footers: list[_FileFooter]) -> pa.Schema:
    import pyarrow as pa

    try:
        return pa.unify_schemas([f.schema for f in footers])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ProfileError(f"the Parquet files have incompatible schemas ({exc}): profile them separately") from exc


def _sum_dicts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for key, value in d.items():
            total[key] = total.get(key, 0) + value
    return total


# ---------------------------------------------------------------------------------------------------
# DataFrames and numbers


def profile_dataframe(
    df: daft.DataFrame,
    *,
    sample_rows: int = DATAFRAME_SAMPLE_ROWS,
    parquet_paths: Sequence[str] | None = None,
    read_profiles: Sequence[DataProfile] = (),
    text_paths: Sequence[str] | None = None,
) -> DataProfile:
    """Profile a Daft DataFrame: its row count (executes the plan up to here) and a sample's sizes.

    With ``parquet_paths`` (what ``daft.read_parquet`` was given for ``df``, which the pipeline probe
    records) and ``df`` that read with nothing else but column selections (:func:`is_plain_read`), the
    files' footers profile it instead: no query runs, and the profile knows the files and row groups,
    which is how Daft's default splits the work.

    With ``read_profiles`` (the footers of the Parquet reads before ``df``), a DataFrame that only joins,
    filters and selects their columns is counted by Daft and sized by the footers, with no sample query
    (:func:`profile_from_reads`).

    With ``text_paths`` (what ``daft.read_csv``/``daft.read_json`` was given for ``df``), a plain read of them
    knows its files, each one's rows estimated from its bytes (:func:`_file_rows_by_size`).

    Examples:
        >>> import daft
        >>> df = daft.from_pydict({"path": [f"img/{i}.jpg" for i in range(500)]})
        >>> p = profile_dataframe(df)
        >>> p.rows, p.heavy_columns
        (500, [])
    """
    from_footers = _footers_of_plain_read(df, parquet_paths)
    if from_footers is not None:
        names = list(df.column_names)
        if all(name in {c.name for c in from_footers.columns} for name in names):
            return from_footers.select(names)
    from_reads = _columns_from_reads(df, read_profiles)
    try:
        if from_reads is not None:
            rows = int(df.count_rows())
            if rows:
                return profile_from_reads(rows, from_reads, len(read_profiles))
        local = read_local_text(df, text_paths, sample_rows) if text_paths and is_plain_read(df) else None
        counted = local.file_rows if local is not None else ()
        known_rows = sum(counted) if local is not None else None
        read_here = (known_rows, local.head) if local is not None and local.head is not None else None
        rows, sample = (
            _materialized_count_and_head(df, sample_rows)
            or _local_listing(df, sample_rows)
            or read_here
            or _count_and_local_head(df, sample_rows, text_paths, rows=known_rows)
            or _count_and_head(df, sample_rows, rows=known_rows)
        )
    except Exception as exc:  # any Daft execution error while reading the source
        raise ProfileError(f"could not read the DataFrame to profile it: {exc}: check its source") from exc
    if rows == 0:
        raise ProfileError("the DataFrame has zero rows: point it at data with rows")
    sampled = max(sample.num_rows, 1)
    daft_types = {f.name: f.dtype for f in df.schema()}
    columns = []
    for index, arrow_field in enumerate(sample.schema):
        column_bytes = sample.column(index).nbytes
        per_row = column_bytes / sampled
        heavy, why = classify_column(arrow_field.name, arrow_field.type, per_row)
        if not heavy and _is_heavy_daft_type(daft_types.get(arrow_field.name)):
            heavy, why = True, f"{daft_types[arrow_field.name]} column"
        columns.append(
            ColumnProfile(
                name=arrow_field.name,
                type=str(daft_types.get(arrow_field.name, arrow_field.type)),
                compressed_bytes=int(per_row * rows),
                uncompressed_bytes=int(per_row * rows),
                heavy=heavy,
                why=why,
            )
        )
    bytes_per_row = sum(c.uncompressed_bytes for c in columns) / rows
    notes = [f"bytes per row estimated from a {sample.num_rows}-row sample"]
    if counted:
        file_rows = counted
        notes.append(f"{len(file_rows)} local files, each one's rows counted here")
    else:
        file_rows = _file_rows_by_size(df, rows, text_paths) if text_paths else ()
        if file_rows:
            notes.append(f"{len(file_rows)} files, each one's rows estimated from its share of the bytes")
    return DataProfile(
        source="DataFrame",
        rows=rows,
        bytes_per_row=bytes_per_row,
        uncompressed_bytes=int(bytes_per_row * rows),
        compressed_bytes=int(bytes_per_row * rows),
        columns=tuple(columns),
        notes=tuple(notes),
        files=len(file_rows),
        min_rows_per_file=min(file_rows, default=0),
        max_rows_per_file=max(file_rows, default=0),
        file_rows=file_rows,
    )


def _file_rows_by_size(df: daft.DataFrame, rows: int, paths: Sequence[str]) -> tuple[int, ...]:
    """The rows of each file of ``df`` when it is a plain read of the CSV or JSON files ``paths`` (no footers
    to count them), estimated from each file's share of the bytes and adding up to ``rows``; () otherwise.

    Daft runs such a read as one task per file, each file handed to the UDF whole (measured on Daft 0.7.26's
    Ray runner: 24 CSV files of 200-2,151 rows, 24 calls of the files' rows). Without the files, the simulator
    took Daft's default for one task of every row, 7.1 s where Daft took 4.5 s, and chose a plan 2× slower.
    """
    if not is_plain_read(df):
        return ()
    sizes = [size for _path, size in listed_files(paths)]
    total = sum(sizes)
    if not sizes or total <= 0 or rows < len(sizes):
        return ()
    shares = [rows * size / total for size in sizes]
    estimated = [math.floor(share) for share in shares]
    # Largest remainders first, so the files add up to the rows counted.
    for index in sorted(range(len(sizes)), key=lambda i: estimated[i] - shares[i])[: rows - sum(estimated)]:
        estimated[index] += 1
    return tuple(estimated)


# Operators between Parquet reads and the scaling step that leave each column as its files hold it.
READ_COLUMN_OPS = frozenset({"Source", "Project", "Join", "Filter"})


def _columns_from_reads(df: daft.DataFrame, reads: Sequence[DataProfile]) -> list[tuple[ColumnProfile, int]] | None:
    """Each of ``df``'s columns as a read's footers describe it, with that read's rows; None unless only
    ``READ_COLUMN_OPS`` come between the reads and ``df`` and each of its columns is a read's column by name."""
    if not reads:
        return None
    try:
        ops = plan_operators(df)
    except Exception:  # the plan text cannot be read: let Daft sample the rows
        return None
    if not ops or not set(ops) <= READ_COLUMN_OPS:
        return None
    known: dict[str, tuple[ColumnProfile, int]] = {}
    for read in reads:  # the first read naming a column describes it (a join's key is in both)
        for column in read.columns:
            known.setdefault(column.name, (column, read.rows))
    if any(name not in known for name in df.column_names):
        return None  # a column computed or renamed on the way: only a sample says its size
    return [known[name] for name in df.column_names]


def profile_from_reads(rows: int, columns: Sequence[tuple[ColumnProfile, int]], reads: int) -> DataProfile:
    """The profile of ``rows`` rows whose columns are Parquet columns (each with its read's rows): each column
    keeps its files' bytes per row. Over a join of 300 small files, this saves the sample query, whose
    ``limit`` on Ray starts Daft's counter actor (about 1 s on a 2 × 2 local cluster).

    >>> column = ColumnProfile("uri", "string", 3_000, 6_000, False, "")
    >>> p = profile_from_reads(200, [(column, 100)], reads=2)
    >>> p.bytes_per_row, p.columns[0].uncompressed_bytes
    (60.0, 12000)
    """
    scaled = tuple(
        replace(
            column,
            compressed_bytes=int(column.compressed_bytes * rows / max(read_rows, 1)),
            uncompressed_bytes=int(column.uncompressed_bytes * rows / max(read_rows, 1)),
        )
        for column, read_rows in columns
    )
    uncompressed = sum(c.uncompressed_bytes for c in scaled)
    return DataProfile(
        source="DataFrame",
        rows=rows,
        bytes_per_row=uncompressed / rows if rows else 0.0,
        compressed_bytes=sum(c.compressed_bytes for c in scaled),
        uncompressed_bytes=uncompressed,
        columns=scaled,
        notes=(f"bytes per row from the footers of the {reads} Parquet read(s) before the scaling step",),
    )


def _materialized_count_and_head(df: daft.DataFrame, sample_rows: int) -> tuple[int, pa.Table] | None:
    """The row count and first rows of a DataFrame whose partitions are already in memory (``daft.from_pydict``,
    ``from_arrow``, a collected DataFrame), read from them with no query; None for any other DataFrame.

    On Ray each profile query pays a start of its own: measured on a 20,000-row ``from_pydict`` table (2 × 2
    local cluster), the count and the head took 3.7 s of a run's 3.9 s preparation, where the table's own
    partitions answer in milliseconds (they are in the driver's object store, put there when it was built).
    Daft's private API (its partition cache entry): anything unexpected gives None, and the queries run.
    """
    try:
        entry = df._result_cache
        if entry is None:
            return None
        rows = int(entry.num_rows())
        partitions = sorted(entry.value.items(), key=lambda item: item[0])
        if not partitions:
            return None
        # A Ray object the driver put, so fetching it reads this machine's object store.
        head = partitions[0][1].micropartition().head(sample_rows).to_arrow()
    except Exception:
        return None
    return rows, head


# The columns of ``daft.from_glob_path``: a listing of files, not their contents.
LISTING_COLUMNS = frozenset({"path", "size", "num_rows"})
# A projection that only selects columns, as Daft's plan text prints it: "col(path), col(size)".
_PLAIN_COLUMNS = re.compile(r"col\(\w+\)(, col\(\w+\))*")


def _local_listing(df: daft.DataFrame, sample_rows: int) -> tuple[int, pa.Table] | None:
    """The row count and first rows of ``daft.from_glob_path`` over local paths with nothing computed on it (a
    listing of files), listed here by Daft's native engine; None for anything else.

    On Ray the head is a ``limit``, which starts Daft's counter actor: measured on 1,500 local files (2 x 2 local
    cluster), the profile took 1.2 s of a 4.6-5.1 s run where plain Daft took 2.8-3.5 s; the listing takes 0.03 s
    here. Only the listing's own columns are read here: anything computed from the paths (a download) is the
    cluster's to run. Daft's native runner is a private API (``daft.runners.native_runner``).
    """

    try:
        text = df._builder.pretty_print(simple=False)
    except Exception:  # a Daft without this private API: the queries run
        return None
    globs = re.findall(r"^\|\s+Glob path: (.*)$", text, flags=re.MULTILINE)
    if "* GlobScan:" not in text or not globs or not is_plain_read(df):
        return None
    projections = re.findall(r"^\* Project: (.*)$", text, flags=re.MULTILINE)
    if not all(_PLAIN_COLUMNS.fullmatch(projection.strip()) for projection in projections):
        return None  # a column computed from the listing (a download): the cluster's to run
    if not all(map(is_local_path, globs)):
        return None
    if not set(df.column_names) <= LISTING_COLUMNS:
        return None
    try:
        listing = _read_natively(df)
    except Exception:  # the native engine could not list them as the cluster does: the queries run
        return None
    return listing.num_rows, listing.slice(0, sample_rows)


def _read_natively(df: daft.DataFrame) -> pa.Table:
    """All of ``df``, read in this process by Daft's native engine (a private API: ``daft.runners.native_runner``)
    whatever the session's runner; only for small reads of local files with nothing of the user's to run."""
    import pyarrow as pa
    from daft.runners.native_runner import NativeRunner

    parts = NativeRunner().run_iter_tables(df._builder, results_buffer_size=None)
    return pa.concat_tables([part.to_arrow() for part in parts])


def _count_and_local_head(
    df: daft.DataFrame, sample_rows: int, text_paths: Sequence[str] | None, *, rows: int | None = None
) -> tuple[int, pa.Table] | None:
    """On Ray, the row count of a plain read of local CSV or JSON files, and its first rows read in this process by
    Daft's native engine while the count runs; None for anything else (or a head that fails: the queries run).

    A ``limit`` on Ray starts Daft's counter actor: measured on 24 CSV files (2 × 2 local cluster), the count and
    the head took 1.2-1.4 s on Ray, the count alone 0.5 s, a native head of 1,000 rows 0.14-0.25 s. Only local
    files with no UDF on the way are read here: this process reads what the cluster would, and runs nothing of the
    user's. Daft's native runner is a private API (``daft.runners.native_runner``). With ``rows`` (counted
    already: :func:`daftscale.profile_text.read_local_text`) only the head is read.
    """
    from daft.runners import _get_runner

    if getattr(_get_runner(), "name", None) != "ray" or not text_paths:
        return None
    if not all(map(is_local_path, text_paths)):
        return None
    if not is_plain_read(df) or calls_udf(df):
        return None

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="daftscale-profile") as pool:
        head = pool.submit(_read_natively, df.limit(sample_rows))
        if rows is None:
            rows = int(df.count_rows())
        try:
            sample = head.result()
        except Exception:  # the native engine could not read it as the cluster does: let the cluster read the head
            return None
    return (rows, sample) if sample.num_rows or not rows else None


def _count_and_head(df: daft.DataFrame, sample_rows: int, *, rows: int | None = None) -> tuple[int, pa.Table]:
    """The row count (unless ``rows`` are known) and the first ``sample_rows`` rows: two queries, run at once on Ray.

    Each query on Ray pays a start of its own (a limit also starts Daft's counter actor), and the two overlap
    well: measured over a join of 300 small files (2 × 2 local cluster), 0.8-1.0 s at once against 1.3-1.4 s
    one after the other. The native runner, and a Ray runner's first query, run them in turn.
    """
    from daft.runners import _get_runner

    if rows is not None:
        return rows, df.limit(sample_rows).to_arrow()
    runner = _get_runner()
    # Only once Daft's plan runner exists: the first query creates it, and two queries starting at once on a
    # fresh runner each create one, which kills the other's (Daft 0.7.26: ActorDiedError).
    if getattr(runner, "name", None) != "ray" or getattr(runner, "flotilla_plan_runner", None) is None:
        return int(df.count_rows()), df.limit(sample_rows).to_arrow()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="daftscale-profile") as pool:
        head = pool.submit(lambda: df.limit(sample_rows).to_arrow())
        rows = int(df.count_rows())
        return rows, head.result()


def footer_rows(df: daft.DataFrame, parquet_paths: Sequence[str] | None) -> int | None:
    """The rows of ``df`` from its Parquet footers when it is a plain read of ``parquet_paths``
    (:func:`is_plain_read`), else None (count them with Daft).

    A saved plan's run counts the rows in for its rows-in = rows-out check; on Ray, ``count_rows`` is a query
    of one task per file (2.4-3.3 s for 200 tiny files on a 2 × 2 local cluster), the footers a read of each
    file's last bytes.
    """
    from_footers = _footers_of_plain_read(df, parquet_paths)
    return None if from_footers is None else from_footers.rows


def _footers_of_plain_read(df: daft.DataFrame, parquet_paths: Sequence[str] | None) -> DataProfile | None:
    """The footers' profile of ``parquet_paths`` when ``df`` is a plain read of them, else None (let Daft read)."""
    if not parquet_paths or not is_plain_read(df):
        return None
    try:
        return profile_parquet(list(parquet_paths))
    except ProfileError:
        return None  # e.g. a store pyarrow cannot reach the way Daft does


# Operators a DataFrame may have above a Parquet scan for its footers to describe it (row for row).
ROW_PRESERVING_OPS = frozenset({"Source", "Project"})


def is_plain_read(df: daft.DataFrame) -> bool:
    """Whether ``df`` is one source read and column projections only (so its rows are the files' rows).

    Read from Daft's plan text (``LogicalPlanBuilder.pretty_print``), not a public API: anything else
    there gives False, and the DataFrame is profiled by running it.

    >>> import daft
    >>> df = daft.from_pydict({"x": [1, 2]})
    >>> is_plain_read(df.select("x")), is_plain_read(df.where(daft.col("x") > 1))
    (True, False)
    """
    try:
        ops = plan_operators(df)
    except Exception:
        return False
    return bool(ops) and set(ops) <= ROW_PRESERVING_OPS and ops.count("Source") == 1


def in_memory_partitions(df: daft.DataFrame) -> int | None:
    """The partitions of ``df`` when it is an in-memory table (``daft.from_pydict``, ``from_arrow``, ``from_pandas``)
    with nothing but projections on it (:func:`is_plain_read`), else None. Daft's default runs one task per
    partition, and one call per morsel of it; a table built in memory is usually one partition.

    >>> import daft
    >>> in_memory_partitions(daft.from_pydict({"x": [1, 2]}).with_column("y", daft.col("x") + 1))
    1
    >>> in_memory_partitions(daft.from_pydict({"x": [1, 2]}).where(daft.col("x") > 1)) is None
    True
    """
    if not is_plain_read(df):
        return None
    try:
        found = re.search(r"Number of partitions = (\d+)", df._builder.pretty_print(simple=False))
    except Exception:  # a Daft without this private API: unknown
        return None
    return int(found.group(1)) if found else None


def profile_numbers(rows: int, bytes_per_row: float | None = None, *, heavy: bool | None = None) -> DataProfile:
    """A profile from plain numbers, for data that does not exist yet.

    >>> profile_numbers(1_000_000, 200).describe()
    '1,000,000 rows, 200 B per row'
    """
    rows = require_positive_int(rows, "rows")
    per_row = 0.0 if bytes_per_row is None else require_positive_number(bytes_per_row, "bytes_per_row")
    return DataProfile(
        source="numbers",
        rows=rows,
        bytes_per_row=per_row,
        uncompressed_bytes=math.ceil(rows * per_row),
        heavy_hint=heavy,
    )


def profile(
    source: str | Sequence[str] | daft.DataFrame | None = None,
    *,
    rows: int | None = None,
    bytes_per_row: float | None = None,
    columns: Sequence[str] | None = None,
) -> DataProfile:
    """Profile whatever the user has: Parquet paths, a DataFrame, or numbers.

    ``rows`` and ``bytes_per_row`` given with a path override what the footers say (e.g. to plan for
    the full dataset from a sample). ``columns`` restricts the profile to the columns the UDF reads.
    """
    if source is None:
        if rows is None:
            raise ProfileError("nothing to profile: pass a Parquet path or glob, or --rows (and --bytes-per-row)")
        result = profile_numbers(rows, bytes_per_row)
    elif isinstance(source, (str, list, tuple)):
        result = profile_parquet(source)
    else:
        result = profile_dataframe(source)
    if columns:
        result = result.select(columns)
    if source is not None and (rows is not None or bytes_per_row is not None):
        new_rows = result.rows if rows is None else require_positive_int(rows, "rows")
        per_row = (
            result.bytes_per_row if bytes_per_row is None else require_positive_number(bytes_per_row, "bytes_per_row")
        )
        result = replace(result, rows=new_rows, bytes_per_row=per_row)
    return result
