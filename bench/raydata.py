"""The same workloads written in Ray Data, with an actor pool of the same size: with Ray Data's defaults, and
as its batch-inference guide recommends.

read_parquet → (W5: ``join`` the small table) → (W6: ``flat_map``, the explode) → (W1, W5: ``map`` per
row, in tasks) → ``map_batches(Model, concurrency=C)`` → (W5: ``groupby(...).aggregate``) → count rows.
``ray-data`` leaves the read's parallelism and the batch size to Ray Data (its default ``batch_size``);
``ray-data-recommended`` sizes the read to the cluster (``override_num_blocks``) and passes a batch size
(:func:`recommended_batch_size`), as the guide's batch-inference examples do. The model class records every call to the
benchmark's collector exactly as daftscale's Daft actor UDFs do (the collector is a named Ray actor,
reachable from any Ray actor), so Ray Data's utilisation is measured the same way.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.workloads import Workload, heavy_read, keys_path, model_args, model_class

# The batch size a Ray Data user passes when following the batch-inference guide (its examples use tens
# to hundreds of rows); capped so every actor gets work and a batch fits the model's declared memory.
RAY_DATA_BATCH = 64


class RecordedModel:
    """Ray Data callable class: the workload's model, each call timed into the collector."""

    def __init__(self, cls: type, args: tuple[Any, ...], column: str, sink: dict[str, Any] | None) -> None:
        # daftscale's recorder (the one inside its Daft actor UDFs) works in any Ray actor.
        from daftscale.udf import recorder_for

        start = time.time()
        self.recorder = recorder_for(sink, "RayDataModel")
        self.model = cls(*args)
        self.column = column
        self.recorder.ready(start, time.time())

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        values = list(batch[self.column])
        key = f"{id(batch):x}-{time.time_ns()}"
        start = time.time()
        self.recorder.started(key, start, len(values))
        out = self.model(values)
        end = time.time()
        self.recorder.finished(key, start, end, len(values))
        keep = {k: v for k, v in batch.items() if k in ("id", "category")}
        return {**keep, "out": np.asarray(out)}


def recommended_batch_size(workload: Workload, concurrency: int) -> int:
    """``RAY_DATA_BATCH``, at most the UDF's rows over the actors (so none idles) and, with a declared
    memory budget, the rows that fit it (W4)."""
    batch = min(RAY_DATA_BATCH, max(1, math.ceil(workload.udf_rows / concurrency)))
    if workload.udf_memory and workload.decoded_bytes_per_row:
        batch = min(batch, max(1, workload.udf_memory // workload.decoded_bytes_per_row))
    return batch


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


def build_raydata(
    workload: Workload,
    files: list[str],
    concurrency: int,
    sink: dict[str, Any] | None,
    *,
    num_blocks: int | None = None,
    batch_size: int | None = None,
) -> Any:
    """The workload as a Ray Data Dataset (lazy), model on an actor pool of ``concurrency``.

    ``num_blocks`` (``override_num_blocks``) and ``batch_size`` left ``None`` are Ray Data's defaults.
    W5's join needs a partition count (Ray Data has no default for it): ``num_blocks``, else ``concurrency``.
    """
    import ray.data

    ds = ray.data.read_parquet(files, override_num_blocks=num_blocks)
    column = workload.column
    if column not in ds.schema().names:
        # Seen in DAFT_NOTES' probe: fail loudly rather than run on the wrong column.
        raise KeyError(f"Ray Data's read_parquet returned no column {column!r}: got {ds.schema().names}")
    if workload.shape == "join":
        keys = ray.data.read_parquet([keys_path(files)])
        ds = ds.join(keys, join_type="inner", num_partitions=num_blocks or concurrency, on=("key",))
    if workload.shape == "explode":

        def explode(row: dict[str, Any]) -> list[dict[str, Any]]:
            return [{"id": row["id"], "chunk": chunk} for chunk in row["text"].split(". ")]

        ds = ds.flat_map(explode)
        column = "chunk"
    if workload.read is not None:
        read, source = heavy_read(workload.read.per_row_s), column
        extra = ("category",) if workload.shape == "join" else ()

        def read_row(row: dict[str, Any]) -> dict[str, Any]:
            return {"id": row["id"], "data": read(row[source]), **{k: row[k] for k in extra}}

        ds = ds.map(read_row)
        column = "data"
    options: dict[str, Any] = {} if batch_size is None else {"batch_size": batch_size}
    ds = ds.map_batches(
        RecordedModel,
        fn_constructor_args=(model_class(workload), model_args(workload), column, sink),
        concurrency=concurrency,
        num_cpus=1,
        batch_format="numpy",
        **options,
    )
    if workload.shape == "join":
        from ray.data.aggregate import Count, Sum

        ds = ds.groupby("category").aggregate(Sum("out", alias_name="out_sum"), Count(alias_name="rows"))
    return ds


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

    ctx = ray.data.DataContext.get_current()
    if importlib.util.find_spec("aiohttp") is None:
        sys.modules.setdefault("fsspec.implementations.http", None)  # type: ignore[arg-type]
        # Ray Data 2.59's default (V2) Parquet reader lists many paths (W5's 300 files) in threads inside a
        # worker task (ListFiles), where the guard above cannot reach: the same race failed every W5 read
        # here. The V1 reader lists on the driver, under the guard. Same files, same blocks downstream.
        if hasattr(ctx, "use_datasource_v2"):
            ctx.use_datasource_v2 = False
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if hasattr(ctx, "enable_operator_progress_bars"):
        ctx.enable_operator_progress_bars = False
