"""The run's output: written whole or not at all, and its rows counted without moving data to the driver.

A run either keeps its output (a pipeline file's ``--output DIR``, or a plain script's own
``df.write_parquet(DIR)``) or keeps nothing (a script that ends in ``collect()``/``show()``, or a
pipeline file run without ``--output``). This module owns both ways of executing the DataFrame:

- :func:`write_output` writes with Daft's own writer into a *staging* directory beside the target (same
  filesystem), counts the rows from the written files (Parquet footers, CSV/JSON lines), then moves the
  result into place with a rename. A run that fails, is stopped or killed never leaves files at the
  target; a killed run's staging directory is removed by the next run that writes there.
- :func:`count_partitions` executes a DataFrame whose rows are not kept and counts them without
  moving them: on Ray from the row count Daft's runner sends with each result (a zero-CPU task per
  partition returning ``len(partition)`` if a result has none), so no partition reaches the driver; on
  the native runner the partitions are already in this process.

Object stores (``s3://``, ``gs://``...) have no rename, so they cannot be written atomically: daftscale
writes there only when told how (``--overwrite`` or ``--append``, passed to Daft's own write modes), and
a failed run may leave part of its files there.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from daftscale.errors import RunError

FORMATS = ("parquet", "csv", "json")

# What to do when the target already holds files: refuse (the default), replace it, or add to it.
MODES = ("error", "overwrite", "append")

# Staging directories are named ``.<target name>.daftscale-staging-<pid>-<hex>`` beside the target: the
# dot keeps them out of globs like ``out*/``, the pid lets a later run tell a dead run's leftovers from a
# live run's.
STAGING_MARK = ".daftscale-staging-"
_STAGING_RE = re.compile(r"^\.(?P<name>.+)\.daftscale-staging-(?P<pid>\d+)-[0-9a-f]+$")

# Partitions in flight while counting on Ray: enough to keep Daft's result buffer draining, few
# enough that unfinished count tasks never pin much of the object store.
MAX_PENDING_COUNTS = 64


class OutputError(RunError):
    """The output target cannot be written as asked (exists, is a file, is an object store...)."""


@dataclass(frozen=True)
class OutputTarget:
    """Where and how a run writes its rows.

    ``options`` are passed to Daft's ``write_<format>`` as they are (a script's ``compression``,
    ``partition_cols``...); ``origin`` says where the target came from, for messages and the report.
    """

    path: str
    format: str = "parquet"
    mode: str = "error"
    options: dict[str, Any] = field(default_factory=dict)
    origin: str = "--output"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise OutputError(f"output format {self.format!r} is not supported: use one of {', '.join(FORMATS)}")
        if self.mode not in MODES:
            raise OutputError(f"output mode {self.mode!r} is not one of {', '.join(MODES)}")

    @property
    def remote(self) -> bool:
        return is_remote(self.path)


@dataclass
class WriteResult:
    """What a write left at the target: its files (final paths) and the rows in them."""

    path: str
    files: list[str]
    rows: int


def is_remote(path: str) -> bool:
    """True for a URL with a scheme other than ``file://`` (an object store or HTTP)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", path)
    return bool(match) and match.group(1).lower() != "file"  # type: ignore[union-attr]


def _local(path: str) -> str:
    return os.path.abspath(path[len("file://") :] if path.startswith("file://") else path)


def _has_files(path: str) -> bool:
    return os.path.isdir(path) and any(os.scandir(path))


def check_target(target: OutputTarget) -> None:
    """Refuse, before anything runs, a target the run could not finish writing as asked."""
    if target.remote:
        if target.mode == "error":
            raise OutputError(
                f"cannot write {target.path} atomically (object stores have no rename): pass --overwrite to let "
                "Daft replace it or --append to add to it (a failed run may leave part of its files there), "
                "or write to a local directory"
            )
        return
    path = _local(target.path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputError(f"output {target.path} is a file, not a directory: choose a directory path")
    if target.mode == "error" and _has_files(path):
        raise OutputError(
            f"output {target.path} already holds files ({target.origin}): pass --overwrite to replace them, "
            "--append to add to them, or choose another output directory"
        )
    # Missing parent directories are made at the write, as Daft's own write makes them (a script writing
    # f"out/{name}" into a new out/); only a file in the way is refused.
    ancestor = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(ancestor) and os.path.dirname(ancestor) != ancestor:
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise OutputError(f"{ancestor} is a file, so output {target.path} cannot be made under it: choose a directory")


def resolve_output(
    script_target: OutputTarget | None,
    output: str | os.PathLike[str] | None,
    output_format: str | None,
    *,
    overwrite: bool = False,
    append: bool = False,
) -> OutputTarget | None:
    """The run's output target: ``output`` (``--output``) if given, else a script's own write, else none.

    ``--output`` takes the script's format and write options unless ``output_format`` is given;
    ``overwrite``/``append`` override the script's write mode.
    """
    if overwrite and append:
        raise OutputError("--overwrite and --append exclude each other: pass one")
    if output_format is not None and output_format not in FORMATS:
        raise OutputError(f"--output-format must be one of {', '.join(FORMATS)}, got {output_format!r}: pick one")
    target = script_target
    if output is not None:
        path = os.fspath(output)
        if target is not None and output_format in (None, target.format):
            target = replace(target, path=path, origin="--output")
        else:
            target = OutputTarget(path, output_format or "parquet", origin="--output")
    elif output_format is not None and target is None:
        raise OutputError("--output-format needs --output DIR: say where to write")
    elif output_format is not None and target is not None and output_format != target.format:
        target = OutputTarget(target.path, output_format, target.mode, origin=target.origin)
    if target is None:
        if append:
            raise OutputError("--append needs an output: pass --output DIR")
        return None
    if overwrite or append:
        target = replace(target, mode="overwrite" if overwrite else "append")
    elif target.origin == "--output":
        target = replace(target, mode="error")  # a script's write mode does not carry over to another directory
    return target


def remove_stale_staging(target_path: str) -> list[str]:
    """Remove staging directories that dead runs left beside ``target_path``; returns what was removed."""
    path = _local(target_path)
    parent, name = os.path.dirname(path) or ".", os.path.basename(path)
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            match = _STAGING_RE.match(entry.name)
            if not match or match.group("name") != name or pid_alive(int(match.group("pid"))):
                continue
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (this one always is)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def write_output(df: Any, target: OutputTarget) -> WriteResult:
    """Execute ``df`` by writing it to ``target``: staged and renamed into place for a local path.

    Raises whatever the query raised; the staging directory is removed on any error, so the target
    holds either all of this run's files or none of them.
    """
    import daft

    _check_writer(df, target.format)
    writer = getattr(daft.DataFrame, f"write_{target.format}")
    if target.remote:
        mode = "overwrite" if target.mode == "overwrite" else "append"
        written = writer(df, target.path, write_mode=mode, **target.options)
        files = _written_paths(written)
        return WriteResult(target.path, files, count_file_rows(files, target.format))

    final = _local(target.path)
    remove_stale_staging(final)
    staging = os.path.join(
        os.path.dirname(final), f".{os.path.basename(final)}{STAGING_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )
    os.makedirs(staging)
    try:
        written = writer(df, staging, write_mode="append", **target.options)
        staged_files = [_local(p) for p in _written_paths(written)]
        rows = count_file_rows(staged_files, target.format)
        relative = [os.path.relpath(p, staging) for p in staged_files]
        _commit(staging, final, target.mode)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WriteResult(target.path, [os.path.join(final, r) for r in relative], rows)


def discard_staging(target: OutputTarget) -> None:
    """Remove this process's staging directories for ``target`` (a write that will not finish)."""
    if target.remote:
        return
    final = _local(target.path)
    prefix = f".{os.path.basename(final)}{STAGING_MARK}{os.getpid()}-"
    with contextlib.suppress(OSError):
        for entry in os.scandir(os.path.dirname(final) or "."):
            if entry.name.startswith(prefix):
                shutil.rmtree(entry.path, ignore_errors=True)


def output_summary(target: OutputTarget | None, written: WriteResult) -> dict[str, Any]:
    """The report's ``output`` entry: where the rows went, how, and how many files and rows."""
    return {
        "path": written.path,
        "format": target.format if target else "",
        "mode": target.mode if target else "",
        "origin": target.origin if target else "",
        "files": len(written.files),
        "rows": written.rows,
    }


def _check_writer(df: Any, fmt: str) -> None:
    """Refuse, before the query runs, a column Daft cannot write as ``fmt``: it fails only at the write, the
    last step, after every UDF has run (on the native runner and on Ray alike)."""
    if fmt == "parquet":
        return
    for column in df.schema():
        try:
            arrow_type = column.dtype.to_arrow_dtype()
        except Exception:  # a type with no Arrow form here is left for Daft's writer to judge
            continue
        if not _writable(arrow_type, fmt):
            if fmt == "csv":
                why = "CSV holds only flat columns, not lists, structs, maps, tensors, embeddings, images or objects"
            else:
                why = "Daft's JSON writer takes no binary, duration, tensor, embedding, image or object values"
            raise OutputError(
                f"cannot write column {column.name!r} ({column.dtype}) as {fmt.upper()}: {why}: write Parquet "
                "(--output-format parquet), or select or cast the columns before the write"
            )


def _writable(arrow_type: Any, fmt: str) -> bool:
    """Whether Daft 0.7's native writer takes ``arrow_type`` in ``fmt`` (the rules of its
    ``native_csv_writer_supported``/``native_json_writer_supported``). A CSV column it does not take falls
    back to a pyarrow writer that fails on import without pyiceberg and on the type with it; JSON has no
    fallback. Everything else, tried on both runners, is written."""
    import pyarrow as pa

    if isinstance(arrow_type, pa.BaseExtensionType):
        return False
    if fmt == "csv":
        return not pa.types.is_nested(arrow_type)
    if pa.types.is_duration(arrow_type) or pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return False
    if pa.types.is_fixed_size_binary(arrow_type):
        return False
    return all(_writable(arrow_type.field(i).type, fmt) for i in range(arrow_type.num_fields))


def _written_paths(written: Any) -> list[str]:
    """The file paths in the DataFrame Daft's write returns (already computed: it holds one row per file)."""
    data = written.to_pydict()
    return [str(p) for p in data.get("path", [])]


def _commit(staging: str, final: str, mode: str) -> None:
    """Move the staged files to ``final``: one rename for a new or replaced target, per file to append."""
    if mode == "append" and os.path.isdir(final):
        for root, _dirs, files in os.walk(staging):
            for name in files:
                source = os.path.join(root, name)
                dest = os.path.join(final, os.path.relpath(source, staging))
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.replace(source, dest)  # Daft names files by UUID, so nothing existing is replaced
        return
    if os.path.isdir(final):
        if mode != "overwrite" and _has_files(final):
            # Checked before the run; files that appeared meanwhile are not ours to replace.
            raise OutputError(f"output {final} gained files while the run wrote: rerun with --overwrite or --append")
        # Rename the old output aside first, so the target is always either the old output or the new one.
        old = f"{staging}.old"
        os.replace(final, old)
        try:
            os.replace(staging, final)
        except OSError:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(staging, final)


def count_file_rows(paths: list[str], fmt: str) -> int:
    """Rows in written files, read from what the files say about themselves (no rows reach this process
    for Parquet: its footers hold the counts; CSV and JSON lines are streamed line by line)."""
    total = 0
    for path in paths:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(_open_path(path)).metadata.num_rows
        elif fmt == "csv":
            import pyarrow.csv as pacsv

            # Streamed in blocks: quoted newlines are parsed correctly and memory stays at one block.
            with contextlib.closing(pacsv.open_csv(_open_path(path))) as reader:
                total += sum(batch.num_rows for batch in reader)
        else:
            with open(_local(path), "rb") as handle:  # Daft writes JSON lines: one record per line
                total += sum(1 for line in handle if line.strip())
    return total


def _open_path(path: str) -> Any:
    if is_remote(path):
        import pyarrow.fs as pafs

        fs, inner = pafs.FileSystem.from_uri(path)
        return fs.open_input_file(inner)
    return _local(path)


# ---------------------------------------------------------------------------------------------------
# Executing without keeping the rows


def count_partitions(df: Any, stop: threading.Event, on_partition: Callable[[int], None]) -> None:
    """Execute ``df`` and report each partition's row count to ``on_partition`` (in arrival order).

    Stops between partitions once ``stop`` is set (closing Daft's iterator ends the query). On Ray the
    count is the one Daft's Ray runner sends with each result (its partition metadata), so no partition
    and no extra task is needed; a result without it is counted by a zero-CPU task where the partition
    lives, which returns an int. On the native runner the partitions are already in this process.
    """
    from daft.runners import get_or_infer_runner_type

    on_ray = get_or_infer_runner_type() == "ray"
    parts = _ray_results(df) if on_ray else df.iter_partitions()
    pending: list[Any] = []
    try:
        for part in parts:
            if stop.is_set():
                break
            if not on_ray:
                on_partition(len(part))
                continue
            rows = _metadata_rows(part)
            if rows is not None:
                on_partition(rows)
                continue
            pending.append(_remote_len(part.partition()))
            pending = _drain(pending, on_partition, wait_all=len(pending) >= MAX_PENDING_COUNTS)
        _drain(pending, on_partition, wait_all=True)
    finally:
        if hasattr(parts, "close"):
            with contextlib.suppress(BaseException):
                parts.close()


def _ray_results(df: Any) -> Any:
    """Daft's Ray results for ``df`` (what ``iter_partitions`` unwraps to bare ObjectRefs), as it runs them."""
    import multiprocessing

    from daft.runners import get_or_create_runner

    # The same results buffer as iter_partitions' default; only metadata is read, refs are dropped at once.
    return get_or_create_runner().run_iter(df._builder, results_buffer_size=multiprocessing.cpu_count())


def _metadata_rows(result: Any) -> int | None:
    try:
        rows = result.metadata().num_rows
    except Exception:  # a Daft whose results carry no metadata: count by task instead
        return None
    return int(rows) if rows is not None else None


_REMOTE_LEN: Any = None


def _remote_len(ref: Any) -> Any:
    global _REMOTE_LEN
    import ray

    if _REMOTE_LEN is None:

        def partition_length(partition: Any) -> int:
            return len(partition)

        # Zero CPUs: counting must never wait behind the query's own tasks for a slot.
        _REMOTE_LEN = ray.remote(num_cpus=0)(partition_length)
    return _REMOTE_LEN.remote(ref)


def _drain(pending: list[Any], on_partition: Callable[[int], None], *, wait_all: bool) -> list[Any]:
    """Report the counts that are ready (all of them with ``wait_all``); return the refs still pending."""
    if not pending:
        return pending  # before importing Ray: the native runner never has counts pending, and may have no Ray
    import ray

    # timeout 0 takes the counts already done without waiting; wait_all waits for every one.
    ready, rest = ray.wait(pending, num_returns=len(pending), timeout=None if wait_all else 0)
    for count in ray.get(ready):
        on_partition(int(count))
    return rest


__all__ = [
    "FORMATS",
    "OutputError",
    "OutputTarget",
    "WriteResult",
    "check_target",
    "count_file_rows",
    "count_partitions",
    "discard_staging",
    "is_remote",
    "output_summary",
    "remove_stale_staging",
    "resolve_output",
    "write_output",
]
