"""What a plain read of local CSV or JSON files holds, read in this process by pyarrow: each file's rows and the
first rows, for :func:`daftscale.profile.profile_dataframe`.

Such files have no footers to count them. On Ray, Daft counts them with a query (0.5 s on a 2 x 2 local cluster)
and reads a head with its native engine in this process (0.3 s of the driver's CPU, on 2 cores the cluster needs);
pyarrow parses a few MB in milliseconds. Only files Daft parses as pyarrow does by default are read here (Daft's
scan options are read from its plan text); anything else returns None, and Daft reads them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import daft
    import pyarrow as pa

# Local files up to this many bytes in all are read here (pyarrow: about 20 ms for 1 MB of CSV, some 0.2 s for
# 64 MB on one core); beyond it Daft counts them, whose query's start is then a small share of the job. Measured on
# 24 CSV files (776 KB, 2 x 2 local cluster): a count on Ray took 0.5-0.6 s, Daft's native count 0.26-0.32 s,
# pyarrow 0.015-0.04 s, on a job of 4-5 s.
LOCAL_TEXT_MAX_BYTES = 64 * 1024 * 1024

# The lines of Daft's plan text for a CSV or JSON scan that leave its rows as pyarrow's default parser counts them,
# with the value each must have (None: any). Any other line (another delimiter, quote, escape or comment character,
# ragged rows allowed, an option a newer Daft adds) means Daft parses the files otherwise, and Daft reads them.
_SCAN_LINES = {
    "Glob paths": None,
    "IO config": None,
    "Use multithreading": None,
    "File schema": None,
    "Partitioning keys": None,
    "Output schema": None,
}
_CSV_LINES = {
    **_SCAN_LINES,
    "Has headers": "true",
    "Double quote": "true",
    "Allow_variable_columns": "false",
    "Delimiter": ",",
}
_PLAN_LINE = re.compile(r"^\|\s+([A-Za-z_ ]+?) = (.*)$")
_COMPRESSED_SUFFIXES = (".gz", ".gzip", ".bz2", ".zst", ".zstd", ".lz4", ".xz", ".zip", ".br", ".deflate", ".zlib")


@dataclass(frozen=True)
class LocalFiles:
    """What :func:`read_local_text` read here: each file's rows (sorted by path) and the first rows, in Daft's
    column types (None when pyarrow could not give them as Daft reads them: Daft reads the head)."""

    file_rows: tuple[int, ...]
    head: pa.Table | None


def is_local_path(path: str) -> bool:
    """Whether ``path`` names this machine's filesystem (no scheme, or ``file://``).

    >>> is_local_path("data/*.csv"), is_local_path("file:///data/a.csv"), is_local_path("s3://bucket/a.csv")
    (True, True, False)
    """
    return "://" not in path or path.startswith("file://")


def listed_files(paths: Sequence[str]) -> list[tuple[str, int]]:
    """Each file ``paths`` name (globs expanded as Daft expands them) with its size in bytes, sorted by path;
    [] when they cannot be listed (another store's credentials): the layout stays unknown."""
    import daft

    try:
        listed = daft.from_glob_path(list(paths)).to_pydict()
    except Exception:
        return []
    return sorted((str(path), int(size)) for path, size in zip(listed["path"], listed["size"], strict=True))


def scan_format(df: daft.DataFrame) -> str | None:
    """``"csv"`` or ``"json"`` when ``df``'s one source scans files (read by ``daft.read_csv``/``read_json``) with
    Daft's default parsing, read from its plan text; None otherwise. The caller knows the read was one of those two:
    a CSV scan names its header option, a JSON scan has no option of its own."""
    try:
        text = df._builder.pretty_print(simple=False)
    except Exception:  # a Daft without this private API: let Daft read
        return None
    if text.count("* GlobScanOperator") != 1:
        return None
    found_lines: dict[str, str] = {}
    for line in text[text.find("* GlobScanOperator") :].splitlines()[1:]:
        if line.startswith("*"):
            break
        found = _PLAN_LINE.match(line)
        if found is not None:  # else a wrapped schema or path list, or the "|" before the next operator
            found_lines[found.group(1)] = found.group(2).strip()
    kind, allowed = ("csv", _CSV_LINES) if "Has headers" in found_lines else ("json", _SCAN_LINES)
    for key, value in found_lines.items():
        if key not in allowed or allowed[key] not in (None, value):
            return None
    return kind


def read_local_text(df: daft.DataFrame, paths: Sequence[str], sample_rows: int) -> LocalFiles | None:
    """Each file's rows and the first ``sample_rows`` rows of ``df``, a plain read (the caller checks:
    :func:`daftscale.profile.is_plain_read`) of the local, uncompressed CSV or JSON-lines files ``paths`` with
    Daft's default parsing, at most ``LOCAL_TEXT_MAX_BYTES`` in all; None otherwise, or when pyarrow cannot parse
    one (a JSON array file, a type it infers otherwise): Daft then reads them.

    CSV quoted line breaks, blank lines and a last line with no line break are counted as Daft counts them
    (checked against Daft 0.7.26, a property test in the suite). Each file's rows, which Daft hands to the UDF
    whole, are then exact rather than shares of the bytes.
    """
    import pyarrow as pa

    if not all(map(is_local_path, paths)):
        return None
    kind = scan_format(df)
    if kind is None:
        return None
    files = listed_files(paths)
    if not files or sum(size for _path, size in files) > LOCAL_TEXT_MAX_BYTES:
        return None
    if any(path.lower().endswith(_COMPRESSED_SUFFIXES) for path, _size in files):
        return None
    local_paths = [path.removeprefix("file://") for path, _size in files]
    count, head = (_csv_rows, _csv_head) if kind == "csv" else (_json_rows, _json_head)
    try:
        rows = tuple(count(path) for path in local_paths)
    except (pa.ArrowException, OSError, IndexError):
        return None
    return LocalFiles(file_rows=rows, head=_in_daft_types(df, head, local_paths, sample_rows))


def _csv_rows(path: str) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    first = pacsv.open_csv(path).schema.names[0]  # the header, as pyarrow and Daft both find it
    # Only the first column is converted, and as text, so no type pyarrow would infer otherwise can fail the count.
    only_first = pacsv.ConvertOptions(include_columns=[first], column_types={first: pa.string()})
    return pacsv.read_csv(path, convert_options=only_first).num_rows


def _json_rows(path: str) -> int:
    import pyarrow.json as pajson

    return pajson.read_json(path).num_rows


def _csv_head(path: str, schema: pa.Schema, sample_rows: int) -> pa.Table:
    import pyarrow.csv as pacsv

    columns = pacsv.ConvertOptions(
        include_columns=schema.names, column_types=dict(zip(schema.names, schema.types, strict=True))
    )
    return _first_rows(pacsv.open_csv(path, convert_options=columns), sample_rows)


def _json_head(path: str, schema: pa.Schema, sample_rows: int) -> pa.Table:
    import pyarrow.json as pajson

    return _first_rows(pajson.open_json(path), sample_rows)


def _first_rows(reader: pa.RecordBatchReader, rows: int) -> pa.Table:
    """At least ``rows`` rows from ``reader``'s first blocks (all of them when it holds fewer), no more blocks."""
    import pyarrow as pa

    batches: list[pa.RecordBatch] = []
    for batch in reader:
        batches.append(batch)
        if sum(b.num_rows for b in batches) >= rows:
            break
    return pa.Table.from_batches(batches, reader.schema)


def _in_daft_types(
    df: daft.DataFrame, read: Callable[[str, pa.Schema, int], pa.Table], paths: Sequence[str], sample_rows: int
) -> pa.Table | None:
    """The first ``sample_rows`` rows of the files ``paths`` read by ``read``, in ``df``'s columns cast to Daft's
    types; None when a column is not a file's (one the read computes) or a value does not cast to Daft's type."""
    import pyarrow as pa

    try:
        schema = pa.schema([(field.name, field.dtype.to_arrow_dtype()) for field in df.schema()])
        tables: list[pa.Table] = []
        for path in paths:
            tables.append(read(path, schema, sample_rows).select(schema.names).cast(schema))
            if sum(table.num_rows for table in tables) >= sample_rows:
                break
        return pa.concat_tables(tables).slice(0, sample_rows)
    except Exception:  # a computed column, a type pyarrow reads otherwise: Daft reads the head
        return None
