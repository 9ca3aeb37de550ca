"""The planner's formulas: pure functions of numbers, each with a doctest of literal numbers.

Daft's scaling guide's shuffle formulas (``A = ceil(C / N)``, ``min_rows_per_partition = B × A``,
``max_partitions = max(1, floor(R / min_rows))``, ``partitions = min(max_partitions, max(C, ceil(R / (K ×
min_rows))))``) with its worked example as the first doctest of each, the batch-size rules (memory bound,
per-call overhead, balance over the actors), the partition bound from node memory and the actors a
cluster can hold. :mod:`daftscale.plan` combines them into a plan and re-exports them.
"""

from __future__ import annotations

import math

from daftscale.cluster import ClusterSpec
from daftscale.config import (
    BATCH_MEMORY_FRACTION,
    NODE_MEMORY_FRACTION_FOR_PARTITIONS,
    TARGET_BATCH_OVERHEAD_SHARE,
    require_positive_int,
)
from daftscale.errors import ConfigError

# Shuffle plans on a cluster whose CPUs are known cut the work into at least this many tasks per CPU
# (task slot) with into_batches after the shuffle, leaving the partition count as formula 1 gives it.
# A task runs the work before the UDF (the heavy read) over its rows before its batches reach the
# actors, and feeds only its own node's actors; big tasks delay every actor's first batch and leave
# uneven tails, and on Ray each into_batches batch is its own task placed anywhere. Measured on W1 of
# bench/ (38,400 rows, 16 CPUs, B = 363): 16 tasks 13.2 s (first UDF call at 10.1 s), 100 tasks 8.9 s
# (first call at 5.0 s). Large inputs, where K = 4 already gives more partitions, are unchanged.
MIN_TASKS_PER_CPU = 4


def actors_per_node(concurrency: int, nodes: int) -> int:
    """Actors on the busiest node: ``A = ceil(C / N)``.

    The scaling guide's example, 16 actors on 4 nodes:

    >>> actors_per_node(16, 4)
    4
    >>> actors_per_node(10, 4)
    3
    """
    return math.ceil(require_positive_int(concurrency, "concurrency") / require_positive_int(nodes, "nodes"))


def min_rows_per_partition(batch_size: int, actors_on_node: int) -> int:
    """Rows a partition needs so one task can hand every actor on its node a batch: ``B * A``.

    >>> min_rows_per_partition(64, 4)
    256
    """
    return require_positive_int(batch_size, "batch_size") * require_positive_int(actors_on_node, "actors")


def max_partitions(rows: int, min_rows: int) -> int:
    """Most partitions that still give each one ``min_rows``: ``max(1, floor(R / min_rows))``.

    >>> max_partitions(1_000_000, 256)
    3906
    >>> max_partitions(100, 256)
    1
    """
    return max(1, require_positive_int(rows, "rows") // require_positive_int(min_rows, "min_rows"))


def recommended_partitions(rows: int, concurrency: int, min_rows: int, batches_per_task: int) -> int:
    """``min(max_partitions, max(C, ceil(R / (K * min_rows))))``: K batches per actor per task,
    at least one partition per actor, never more than ``max_partitions``.

    The scaling guide's example recommends "~1000" for 1M rows:

    >>> recommended_partitions(1_000_000, 16, 256, 4)
    977
    >>> recommended_partitions(10_000, 16, 256, 4)
    16
    >>> recommended_partitions(1_000, 16, 256, 4)
    3
    """
    k = require_positive_int(batches_per_task, "batches_per_task")
    upper = max_partitions(rows, min_rows)
    return min(upper, max(require_positive_int(concurrency, "concurrency"), math.ceil(rows / (k * min_rows))))


def whole_batches(rows: int, batch_size: int) -> int:
    """``rows`` rounded to the nearest whole number of UDF batches (at least one).

    A task of 600 rows with B = 363 makes calls of 363 and 237 rows: as many calls as 726 rows would,
    each paying the fixed cost, with less work behind it. Whole batches keep every call at B.

    >>> whole_batches(600, 363), whole_batches(6, 4), whole_batches(100, 64), whole_batches(10, 64)
    (726, 8, 128, 64)
    """
    return max(1, math.floor(rows / batch_size + 0.5)) * batch_size


def shuffle_task_rows(rows: int, partitions: int, batch_size: int, total_cpus: float | None) -> int | None:
    """Rows per task for ``into_batches`` after a shuffle, or ``None`` when the partitions are fine-grained.

    ``max(B, ceil(R / (MIN_TASKS_PER_CPU × CPUs)))`` in whole batches (:func:`whole_batches`), used
    only when a partition holds at least two such tasks: Daft's ``into_batches(T)`` is best effort (it
    emits from 0.8·T rows), and has been seen to pass a partition only a little over T on whole, so a
    lever that barely undercuts the partition buys nothing dependable.

    >>> shuffle_task_rows(38_400, 16, 363, 16)     # 16 partitions of 2,400 rows → tasks of 2 × 363
    726
    >>> shuffle_task_rows(1_000_000, 977, 64, 16) is None   # the scaling guide's example: already fine-grained
    True
    >>> shuffle_task_rows(5_000, 13, 50, 4) is None         # 385-row partitions, tasks of 300: not two
    True
    >>> shuffle_task_rows(38_400, 16, 363, None) is None    # CPUs unknown: leave it to the partitions
    True
    """
    if not total_cpus:
        return None
    task_rows = whole_batches(max(batch_size, math.ceil(rows / (MIN_TASKS_PER_CPU * total_cpus))), batch_size)
    return task_rows if 2 * task_rows <= math.ceil(rows / partitions) else None


def memory_bounded_batch_size(budget_bytes: float, bytes_per_row: float) -> int | None:
    """Largest batch whose decoded rows fit ``BATCH_MEMORY_FRACTION`` of an actor's budget.

    ``None`` when nothing bounds it (no budget or no size known); 0 when not even one row fits.

    >>> memory_bounded_batch_size(8 * 2**30, 3 * 2**20)   # 8 GiB actor, 3 MiB decoded rows
    1365
    >>> memory_bounded_batch_size(0, 100) is None
    True
    """
    if budget_bytes <= 0 or bytes_per_row <= 0:
        return None
    return int(budget_bytes * BATCH_MEMORY_FRACTION // bytes_per_row)


def overhead_bounded_batch_size(
    seconds_per_batch: float, seconds_per_row: float, target_share: float = TARGET_BATCH_OVERHEAD_SHARE
) -> int:
    """Smallest batch whose fixed per-call cost is at most ``target_share`` of the call:
    ``fixed / (fixed + B * per_row) <= t``  ⇔  ``B >= fixed * (1 - t) / (t * per_row)``.

    A measured Python actor UDF, 20 ms fixed and 0.5 ms per row, wants 360 rows for 10 % overhead:

    >>> overhead_bounded_batch_size(0.020, 0.0005)
    360
    >>> overhead_bounded_batch_size(0.0, 0.001)
    1
    """
    if seconds_per_batch <= 0:
        return 1
    if seconds_per_row <= 0:
        raise ConfigError("UDF profile has zero seconds per row: profile it on more rows")
    return max(1, math.ceil(seconds_per_batch * (1 - target_share) / (target_share * seconds_per_row) - 1e-9))


def balanced_batch_size(seconds_per_batch: float, seconds_per_row: float, rows_per_actor: float) -> int:
    """The batch that minimises per-call overhead plus the stage's tail: ``B = sqrt(2 × n × fixed / per_row)``.

    An actor that runs ``n`` rows in batches of ``B`` spends ``n / B × fixed`` on per-call cost, and the
    stage ends when the last actor finishes, on average half a call after the others:
    ``T(B) ≈ n × fixed / B + (fixed + B × per_row) / 2``, smallest at the ``B`` above. A long stage
    (many rows per actor) so affords batches bigger than the overhead target's: at 10 % overhead an
    actor with a million rows would spend a tenth of its time on fixed costs for a tail of a fraction of a second.

    A measured Python actor UDF (20 ms + 0.5 ms per row) with 4,800 rows per actor, and with 200,000:

    >>> balanced_batch_size(0.020, 0.0005, 4_800), balanced_batch_size(0.020, 0.0005, 200_000)
    (620, 4000)
    >>> balanced_batch_size(0.0, 0.001, 1_000)
    1
    """
    if seconds_per_batch <= 0 or rows_per_actor <= 0:
        return 1
    if seconds_per_row <= 0:
        raise ConfigError("UDF profile has zero seconds per row: profile it on more rows")
    return max(1, math.ceil(math.sqrt(2 * rows_per_actor * seconds_per_batch / seconds_per_row) - 1e-9))


def partition_bytes_bound(memory_per_node: float, tasks_per_node: float, inflation: float) -> int:
    """Largest partition (in-memory bytes) a node can hold for every task it runs at once, after
    Daft's inflation of decoded data, within ``NODE_MEMORY_FRACTION_FOR_PARTITIONS`` of its memory.

    >>> from daftscale.config import format_bytes
    >>> format_bytes(partition_bytes_bound(64 * 2**30, 8, 3.0))
    '1.3 GiB'
    """
    return int(memory_per_node * NODE_MEMORY_FRACTION_FOR_PARTITIONS / (max(tasks_per_node, 1.0) * inflation))


def cluster_actor_capacity(cluster: ClusterSpec, udf_cpus: float, udf_gpus: float) -> int | None:
    """Actors the cluster can schedule at once for this UDF (``None`` if the cluster's CPUs are unknown).

    >>> cluster_actor_capacity(ClusterSpec(nodes=4, cpus_per_node=8, gpus_per_node=2), 1, 0.5)
    16
    >>> cluster_actor_capacity(ClusterSpec(nodes=4, cpus_per_node=8), 2, 0)
    16
    """
    if udf_gpus > 0:
        return math.floor(cluster.gpus_per_node / udf_gpus + 1e-9) * cluster.nodes
    if cluster.cpus_per_node is None or udf_cpus <= 0:
        return None
    return math.floor(cluster.cpus_per_node / udf_cpus + 1e-9) * cluster.nodes


# Daft's execution setting for a groupby's shuffle partitions, and its default: Daft uses min(the partitions
# reaching the groupby, the setting).
AGGREGATION_SETTING = "shuffle_aggregation_default_partitions"
DAFT_AGGREGATION_PARTITIONS = 200


def aggregation_partitions(rows: int, bytes_per_row: float, task_slots: float | None, partition_bytes: int) -> int:
    """Shuffle partitions for a groupby after the UDF: one per task slot, more when the rows would make any
    larger than ``partition_bytes``, never above Daft's own cap.

    Daft's default is min(partitions reaching the groupby, 200): one per input file with no scaling step,
    so 300 small files shuffle 10 groups into 200 tasks. Measured on the bench's W5 (24,000 rows, 300
    files, 16 task slots): the whole job took 14.6-11.8 s with 8 partitions against 19.5-15.0 s with 200.
    The rows and bytes are those reaching the UDF: a groupby's partial aggregates are no larger.

    >>> aggregation_partitions(24_000, 120, 16, 1 << 30)
    16
    >>> aggregation_partitions(100_000_000, 2_000, 16, 1 << 30)
    187
    >>> aggregation_partitions(10**12, 2_000, 16, 1 << 30), aggregation_partitions(10, 1, None, 1 << 30)
    (200, 1)
    """
    by_bytes = math.ceil(rows * max(bytes_per_row, 0.0) / max(partition_bytes, 1))
    slots = math.floor(task_slots) if task_slots else 1
    return int(min(DAFT_AGGREGATION_PARTITIONS, max(1, slots, by_bytes)))


# Daft's own minimum scan-task size when its scan-task merge is on (DaftExecutionConfig's default): small files
# are merged up to it. A merge toward fewer tasks never goes above it.
DAFT_SCAN_TASK_MIN_BYTES = 96 * 1024 * 1024

# Daft's default read runs one task per file. Above this many files per task slot, tiny files are merged.
MERGE_ABOVE_FILES_PER_SLOT = 4
# ... into about this many scan tasks per task slot: each slot still has a task to run while another waits on
# the actors, and the work before the UDF stays spread over the cluster.
MERGED_TASKS_PER_SLOT = 2


def merged_scan_task_bytes(files: int, in_memory_bytes: int, task_slots: float | None) -> int | None:
    """The minimum scan-task size that reads ``files`` small Parquet files in about ``MERGED_TASKS_PER_SLOT``
    tasks per task slot, or ``None`` to leave Daft's one task per file.

    Daft runs each scan task as a task of its own, with a fixed scheduling cost, so hundreds of tiny files
    spend more on tasks than on rows. Measured on a 2 × 2 local cluster (200 files of 1.8 KB, exploded into
    32,126 rows for a 4-actor stand-in model): 6.0-7.1 s with one task per file, 4.2-5.1 s with the files
    merged into 1-8 tasks. Only files smaller than the merged size are merged, and the size never exceeds
    Daft's own minimum (``DAFT_SCAN_TASK_MIN_BYTES``), so large files keep a task each.

    ``in_memory_bytes`` is the files' size in the measure Daft merges by, its estimate of their size in memory
    (:func:`daft_read_bytes`).

    >>> merged_scan_task_bytes(200, 1_000_000, 4)          # 200 files of 5 KB, 4 slots → 8 tasks of 125 KB
    125000
    >>> merged_scan_task_bytes(16, 1_000_000, 4) is None   # 4 files per slot: Daft's default
    True
    >>> merged_scan_task_bytes(300, 300 * 2**30, 16) is None   # 1 GiB files: already one task's worth each
    True
    >>> merged_scan_task_bytes(200, 1_000_000, None) is None   # task slots unknown
    True
    """
    if not task_slots or files <= MERGE_ABOVE_FILES_PER_SLOT * task_slots or in_memory_bytes <= 0:
        return None
    # Rounded down, so the merged tasks are never fewer than the target.
    size = min(in_memory_bytes // math.ceil(MERGED_TASKS_PER_SLOT * task_slots), DAFT_SCAN_TASK_MIN_BYTES)
    # Files already about this size would each still make a task: nothing to merge.
    return size if size >= 2 * in_memory_bytes / files else None


# Daft's default parquet_inflation_factor: Daft 0.7.26 estimates a Parquet file's size in memory as its bytes
# on disk times this (measured: 40 files of 535 bytes merged as if each were about 1.6 KB).
DAFT_PARQUET_INFLATION = 3.0


def daft_read_bytes(file_bytes: int, uncompressed_bytes: int) -> int:
    """The files' size as Daft's scan-task merge measures it: bytes on disk × ``DAFT_PARQUET_INFLATION``, or the
    footers' uncompressed bytes when the sizes on disk are unknown.

    For tiny files the two differ most: each file's footer and page headers are most of its bytes on disk.

    >>> daft_read_bytes(21_404, 6_960), daft_read_bytes(0, 6_960)
    (64212, 6960)
    """
    return round(file_bytes * DAFT_PARQUET_INFLATION) if file_bytes > 0 else uncompressed_bytes


def scan_merge_settings(min_bytes: int) -> dict[str, int | bool]:
    """Daft's execution settings that merge scan tasks up to ``min_bytes`` (:func:`merged_scan_task_bytes`).

    The maximum is twice the minimum: two files each below the minimum never exceed it together, so no
    merge stops early, and a file above it is split by row group as Daft's merge does.

    >>> scan_merge_settings(125_000)
    {'enable_scan_task_split_and_merge': True, 'scan_tasks_min_size_bytes': 125000, 'scan_tasks_max_size_bytes': 250000}
    """
    return {
        "enable_scan_task_split_and_merge": True,
        "scan_tasks_min_size_bytes": int(min_bytes),
        "scan_tasks_max_size_bytes": 2 * int(min_bytes),
    }


__all__ = [
    "AGGREGATION_SETTING",
    "DAFT_AGGREGATION_PARTITIONS",
    "DAFT_PARQUET_INFLATION",
    "DAFT_SCAN_TASK_MIN_BYTES",
    "MIN_TASKS_PER_CPU",
    "actors_per_node",
    "aggregation_partitions",
    "balanced_batch_size",
    "cluster_actor_capacity",
    "daft_read_bytes",
    "max_partitions",
    "memory_bounded_batch_size",
    "merged_scan_task_bytes",
    "min_rows_per_partition",
    "overhead_bounded_batch_size",
    "partition_bytes_bound",
    "recommended_partitions",
    "scan_merge_settings",
    "shuffle_task_rows",
    "whole_batches",
]
