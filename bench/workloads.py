"""The benchmark's workloads: synthetic data, stand-in UDFs, and the Daft DataFrame each configuration runs.

Every UDF cost is ``time.sleep(fixed + per_row × rows)``: an honest stand-in for a GPU model call when
what is measured is *scheduling* (who gets which rows when), not compute. A sleeping actor needs no
core, so a 2-core machine can host 16 logical CPUs of them; real CPU work could not be measured so.

- W1 light: one Parquet file of paths → per-row "heavy read" UDF (in tasks) → model actor UDF
  (the seed's recipe 1; DAFT_NOTES' costs: read 0.5 ms/row, model 20 ms + 0.5 ms/row).
- W2 heavy: Parquet files of binary blobs with very uneven sizes → model actor UDF (recipe 2).
- W3 small: fewer rows than actors × batch size, with an expensive per-row model.
- W4 memory-tight: small blobs on disk that the model "decodes" to 1 MiB each; the model really
  allocates and touches the decoded batch, and raises :class:`MemoryError` (as a GPU raises OOM)
  when the batch would exceed its declared per-actor budget.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

MIB = 1 << 20

# Rows per Parquet row group in the bench's files: Daft's scan morsel, and so its default UDF batch.
ROW_GROUP_ROWS = 8192


@dataclass(frozen=True)
class Costs:
    """``sleep(fixed_s + per_row_s × rows)`` per call."""

    fixed_s: float
    per_row_s: float


@dataclass(frozen=True)
class Workload:
    """One workload: its data's shape, its UDF costs, and what the model may use in memory."""

    name: str
    title: str
    kind: str  # "light": a column of paths; "heavy": a binary column
    file_rows: tuple[int, ...]  # rows in each Parquet file (uneven on purpose for W2)
    model: Costs
    read: Costs | None = None  # per-row "heavy read" before the model, in tasks (W1)
    blob_bytes: int = 0  # on-disk bytes per row of the binary column (heavy kinds)
    decoded_bytes_per_row: int = 0  # bytes the model allocates per row (W4)
    udf_memory: int | None = None  # declared per-actor memory budget (W4)
    profile_batch_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)

    @property
    def rows(self) -> int:
        return sum(self.file_rows)

    @property
    def row_group_rows(self) -> int:
        """Rows per row group of the largest file (:func:`make_data` writes groups of ``ROW_GROUP_ROWS``)."""
        return min(max(self.file_rows), ROW_GROUP_ROWS)

    @property
    def column(self) -> str:
        # Not "path": Ray Data 2.59's read_parquet drops a column named "path" from the rows it reads
        # (its schema still lists it); see bench.raydata.path_column_check. Every configuration reads
        # the same files, so all use "uri".
        return "uri" if self.kind == "light" else "blob"

    def ideal_s(self, concurrency: int, task_slots: int) -> float:
        """The physical bound: per-row UDF work over the concurrency of its stage, summed over stages.

        ``ideal_s = R × read.per_row / task_slots + R × model.per_row / C``. Fixed per-call costs, start-up
        and scheduling are left out on purpose: they are what a configuration can make small.
        """
        total = self.rows * self.model.per_row_s / concurrency
        if self.read is not None:
            total += self.rows * self.read.per_row_s / task_slots
        return total

    def scaled(self, factor: float) -> Workload:
        """The same workload with every file's rows multiplied by ``factor`` (at least 1 row per file)."""
        return replace(self, file_rows=tuple(max(1, round(r * factor)) for r in self.file_rows))

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = self.rows
        return data


def _uneven(total: int, shares: tuple[float, ...]) -> tuple[int, ...]:
    rows = [max(1, int(total * s / sum(shares))) for s in shares]
    rows[0] += total - sum(rows)
    return tuple(rows)


# Sizes are for the full run; --quick scales rows down (QUICK_SCALE). Chosen so the ideal bound is
# several seconds at quick size, large against actor-pool start (about 1-3 s here), while the worst
# configuration (one task, one actor) still finishes within a couple of minutes.
WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        name="W1",
        title="light: paths → per-row heavy read → model",
        kind="light",
        file_rows=(96_000,),
        read=Costs(0.0, 0.0005),
        model=Costs(0.020, 0.0005),
    ),
    "W2": Workload(
        name="W2",
        title="heavy: uneven Parquet files of blobs → model",
        kind="heavy",
        file_rows=_uneven(48_000, (40, 20, 12, 8, 6, 5, 4, 3, 2)),
        blob_bytes=4096,
        model=Costs(0.020, 0.002),
    ),
    "W3": Workload(
        name="W3",
        title="small: fewer rows than actors × batch size",
        kind="light",
        file_rows=(384,),
        model=Costs(0.020, 0.050),
        profile_batch_sizes=(2, 4, 8, 16),
    ),
    "W4": Workload(
        name="W4",
        title="memory-tight: 1 MiB decoded per row, 48 MiB per actor",
        kind="heavy",
        file_rows=_uneven(24_000, (3, 2, 1, 1)),
        blob_bytes=2048,
        decoded_bytes_per_row=MIB,
        udf_memory=48 * MIB,
        model=Costs(0.010, 0.004),
        profile_batch_sizes=(2, 4, 8, 16),
    ),
}

# Rows of the full workloads kept by --quick. W3 is small by definition and keeps its rows.
QUICK_SCALE = {"W1": 0.4, "W2": 0.5, "W3": 1.0, "W4": 0.5}


# ---------------------------------------------------------------------------------------------------
# The stand-in UDFs


class SleepModel:
    """A model call: ``sleep(fixed + per_row × rows)``; optionally decodes each row into real memory.

    With ``decoded_bytes_per_row`` it allocates a ``rows × decoded`` uint8 array and touches every page
    (so the memory is resident), and raises :class:`MemoryError` first if that exceeds ``memory_budget``:
    the same failure a GPU model raises when a batch does not fit its memory.
    """

    def __init__(
        self, fixed_s: float, per_row_s: float, decoded_bytes_per_row: int = 0, memory_budget: int | None = None
    ) -> None:
        self.fixed_s = fixed_s
        self.per_row_s = per_row_s
        self.decoded = decoded_bytes_per_row
        self.budget = memory_budget

    def __call__(self, values: list[Any]) -> list[int]:
        rows = len(values)
        decoded = None
        if self.decoded:
            need = rows * self.decoded
            if self.budget is not None and need > self.budget:
                raise MemoryError(
                    f"out of memory: a batch of {rows} rows decodes to {need / MIB:.0f} MiB, over the actor's "
                    f"{self.budget / MIB:.0f} MiB budget"
                )
            import numpy as np

            decoded = np.empty(need, dtype=np.uint8)
            decoded[::4096] = 1  # touch every page so the memory is really resident
        time.sleep(self.fixed_s + self.per_row_s * rows)
        del decoded
        return [len(v) if v is not None else 0 for v in values]


def profile_read(workload: Workload, rows: int = 64, repeats: int = 3) -> float | None:
    """Seconds per row of the workload's per-row read, timed on ``rows`` rows (the best of ``repeats``), as a
    user would time their read step; ``None`` when the workload has none."""
    if workload.read is None:
        return None
    read = heavy_read(workload.read.per_row_s)
    values = sample_values(replace(workload, read=None), rows)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for value in values:
            read(value)
        best = min(best, (time.perf_counter() - start) / rows)
    return best


def heavy_read(per_row_s: float) -> Callable[[str], str]:
    """The per-row "heavy read" of W1 (fetching the file behind a path): sleeps, returns a payload."""

    def read(path: str) -> str:
        time.sleep(per_row_s)
        return path + "#data"

    return read


# ---------------------------------------------------------------------------------------------------
# Data


def make_data(workload: Workload, directory: str, *, seed: int = 0) -> list[str]:
    """Write the workload's Parquet files under ``directory`` (reused if already there); returns their paths."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, "_rows")
    expected = ",".join(map(str, workload.file_rows)) + f";{workload.blob_bytes};{workload.column}"
    paths = [os.path.join(directory, f"part-{i:03d}.parquet") for i in range(len(workload.file_rows))]
    if os.path.exists(marker) and open(marker).read() == expected and all(map(os.path.exists, paths)):
        return paths
    rng = np.random.default_rng(seed)
    start = 0
    for path, rows in zip(paths, workload.file_rows, strict=True):
        ids = np.arange(start, start + rows, dtype=np.int64)
        if workload.kind == "light":
            column = pa.array([f"s3://bucket/images/{i:09d}.jpg" for i in ids])
        else:
            blob = rng.integers(0, 256, size=rows * workload.blob_bytes, dtype=np.uint8).tobytes()
            column = pa.array(
                [blob[j * workload.blob_bytes : (j + 1) * workload.blob_bytes] for j in range(rows)], pa.binary()
            )
        table = pa.table({"id": ids, workload.column: column})
        tmp = path + ".tmp"
        pq.write_table(table, tmp, row_group_size=max(1, min(rows, ROW_GROUP_ROWS)))
        os.replace(tmp, path)
        start += rows
    with open(marker, "w") as handle:
        handle.write(expected)
    return paths


def sample_values(workload: Workload, rows: int = 64) -> list[Any]:
    """Input rows for profiling the model UDF, shaped as the model receives them."""
    if workload.kind == "light":
        values = [f"s3://bucket/images/{i:09d}.jpg" for i in range(rows)]
        return [v + "#data" for v in values] if workload.read is not None else values
    return [os.urandom(workload.blob_bytes) for _ in range(rows)]


def model_args(workload: Workload) -> tuple[Any, ...]:
    return (workload.model.fixed_s, workload.model.per_row_s, workload.decoded_bytes_per_row, workload.udf_memory)


# ---------------------------------------------------------------------------------------------------
# The Daft DataFrame


def build_daft(workload: Workload, files: list[str], scale: Callable[[Any], Any], model_udf: Any) -> Any:
    """read → ``scale(df)`` (the configuration's scaling step) → [heavy read] → model, as a Daft DataFrame.

    ``model_udf`` is an instance of the actor UDF class (:func:`daftscale.udf.actor_udf`).
    """
    import daft

    df = daft.read_parquet(files)
    df = scale(df)
    source = df[workload.column]
    if workload.read is not None:
        read = daft.func(heavy_read(workload.read.per_row_s), return_dtype=daft.DataType.string())
        df = df.with_column("data", read(df[workload.column]))
        source = df["data"]
    df = df.with_column("out", model_udf(source))
    return df.exclude(*(c for c in ("data", "blob") if c in df.column_names))
