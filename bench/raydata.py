"""The same workloads written in Ray Data, with Ray Data's defaults and an actor pool of the same size.

read_parquet → (W1: ``map`` per row, the heavy read, in tasks) → ``map_batches(Model, concurrency=C)``
with Ray Data's default ``batch_size`` → count rows. The model class records every call to the
benchmark's collector exactly as daftscale's Daft actor UDFs do (the collector is a named Ray actor,
reachable from any Ray actor), so Ray Data's utilisation is measured the same way.
"""

from __future__ import annotations

import time
from typing import Any

from bench.workloads import SleepModel, Workload, heavy_read, model_args


class RecordedModel:
    """Ray Data callable class: the workload's :class:`SleepModel`, each call timed into the collector."""

    def __init__(self, args: tuple[Any, ...], column: str, sink: dict[str, Any] | None) -> None:
        # daftscale's recorder (the one inside its Daft actor UDFs) works in any Ray actor.
        from daftscale.udf import _Recorder

        start = time.time()
        self.recorder = _Recorder(sink, "RayDataModel")
        self.model = SleepModel(*args)
        self.column = column
        self.recorder.ready(start, time.time())

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        values = list(batch[self.column])
        key = f"{id(batch):x}-{time.time_ns()}"
        start = time.time()
        self.recorder.started(key, start, len(values))
        out = self.model(values)
        end = time.time()
        self.recorder.finished(key, start, end, len(values))
        return {"id": batch["id"], "out": out}


def path_column_check(directory: str) -> str | None:
    """Does Ray Data's ``read_parquet`` keep a column named ``path``? DAFT_NOTES saw it dropped.

    Writes a 4-row file with columns ``id`` and ``path`` and reads one row back; returns a note when
    the row lacks ``path`` (``None`` when it is kept).
    """
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray.data

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "path-column.parquet")
    pq.write_table(pa.table({"id": [0, 1, 2, 3], "path": ["a", "b", "c", "d"]}), path)
    ds = ray.data.read_parquet([path])
    listed, got = list(ds.schema().names), sorted(ds.take(1)[0])
    if "path" in got:
        return None
    return (
        f"Ray Data read_parquet dropped the column named 'path': schema() lists {listed} but rows have {got}; "
        "the benchmark's light data names the column 'uri' for every configuration"
    )


def build_raydata(workload: Workload, files: list[str], concurrency: int, sink: dict[str, Any] | None) -> Any:
    """The workload as a Ray Data Dataset (lazy), model on an actor pool of ``concurrency``."""
    import ray.data

    ds = ray.data.read_parquet(files)
    column = workload.column
    if column not in ds.schema().names:
        # Seen in DAFT_NOTES' probe: fail loudly rather than run on the wrong column.
        raise KeyError(f"Ray Data's read_parquet returned no column {column!r}: got {ds.schema().names}")
    if workload.read is not None:
        read, source = heavy_read(workload.read.per_row_s), column

        def read_row(row: dict[str, Any]) -> dict[str, Any]:
            return {"id": row["id"], "data": read(row[source])}

        ds = ds.map(read_row)
        column = "data"
    return ds.map_batches(
        RecordedModel,
        fn_constructor_args=(model_args(workload), column, sink),
        concurrency=concurrency,
        num_cpus=1,
        batch_format="numpy",
    )


def quiet() -> None:
    """No progress bars or per-operator logs from Ray Data in the benchmark's output; and a guard.

    The guard: Ray Data 2.59 lists files in threads, each doing ``from fsspec.implementations.http import
    HTTPFileSystem`` and catching only ``ModuleNotFoundError``. Without ``aiohttp`` installed two threads
    can race on the half-imported module and one gets a plain ``ImportError`` that fails the read (seen
    here). Marking the module absent makes every attempt a clean ``ModuleNotFoundError``: local files only.
    """
    import importlib.util
    import sys

    import ray.data

    if importlib.util.find_spec("aiohttp") is None:
        sys.modules.setdefault("fsspec.implementations.http", None)  # type: ignore[arg-type]

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
