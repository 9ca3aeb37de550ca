"""Uneven input files, read from the footers: how unevenly Daft's default spreads them over the actors, and
the ``into_batches`` split that evens them out whatever the model costs, so no sample run is needed.

Daft's default runs one task per input file and hands each task's rows to the model, so a file larger than
an even share of the rows keeps one actor busy after the others are done. ``into_batches(T)`` on Ray cuts
every file into pieces of at most T rows and gathers pieces, in order, into tasks of at least 0.8 × T rows
(Daft's ``BATCH_SIZE_THRESHOLD``, ``src/daft-distributed/src/pipeline_node/into_batches.rs``): with T sized
so that these tasks are no more than the files, the model gets no more calls than under Daft's default, no
call larger than Daft's default would make it (the UDF keeps Daft's own batch, or the pipeline's), and each
actor about an even share of the rows. Under any cost of the form "per call + per row" that is no slower,
which is why this needs no sample run (whose start alone, 2.1-2.6 s for 960 rows on a 2 × 2 local cluster,
is what a job of seconds cannot win back).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daftscale.plan import ScalingPlan
    from daftscale.profile import DataProfile

# Daft's into_batches on Ray sends a group of pieces on as one task once it holds this share of T rows.
INTO_BATCHES_EMIT_SHARE = 0.8

# Tasks per actor the split may aim for: at least 2, since a task's rows go to the actors on its own node and
# with one task per actor two tasks landing on one node leave actors idle (the bench's W7, 2 files on
# 2 actors: both ran on one actor once); at most 8, where the busiest actor is within an eighth of a task of
# an even share and more tasks buy nothing but scheduling.
SPLIT_MIN_TASKS_PER_ACTOR = 2
SPLIT_MAX_TASKS_PER_ACTOR = 8

# The split is chosen only when it brings the busiest actor's rows down by at least this factor: a smaller
# gain is within what a task's placement (its node's actors) can take back.
SPLIT_MIN_GAIN = 1.1


def default_imbalance(file_rows: Sequence[int], actors: int) -> float:
    """The busiest actor's rows over an even share when each file goes whole, in order, to whichever actor is
    free first (Daft's default with rows of one cost): 1.0 is perfectly even.

    >>> default_imbalance([1_500] * 16, 4)
    1.0
    >>> default_imbalance([1_500] * 18, 4)  # a last wave of 2 files for 4 actors
    1.1111111111111112
    >>> round(default_imbalance([7_532, 3_000, 2_000, 1_500, 1_000, 900, 800, 700], 4), 2)  # one file over a share
    1.73
    """
    if actors < 1 or not file_rows or sum(file_rows) <= 0:
        return math.inf
    loads = [0] * actors
    for rows in file_rows:
        heapq.heapreplace(loads, loads[0] + rows)
    return max(loads) / (sum(file_rows) / actors)


def into_batches_tasks(file_rows: Sequence[int], rows_per_task: int) -> list[int]:
    """The tasks (their rows) that ``into_batches(rows_per_task)`` makes of these files on Daft's Ray runner:
    each file cut into pieces of at most ``rows_per_task``, pieces gathered in order until a group holds
    ``INTO_BATCHES_EMIT_SHARE`` of it, what is left one last task.

    >>> into_batches_tasks([7_532, 3_059, 400, 300, 200], 1_250)
    [1250, 1250, 1250, 1250, 1250, 1250, 1282, 1250, 1259, 200]
    """
    threshold = max(1, int(rows_per_task * INTO_BATCHES_EMIT_SHARE))
    tasks: list[int] = []
    current = 0
    for rows in file_rows:
        while rows > 0:
            piece = min(rows, rows_per_task)
            rows -= piece
            current += piece
            if current >= threshold:
                tasks.append(current)
                current = 0
    if current:
        tasks.append(current)
    return tasks


def into_batches_calls(tasks: Sequence[int], rows_per_task: int) -> list[int]:
    """The UDF calls (their rows) of these tasks at most: each task's rows in calls of at most ``rows_per_task``.

    Measured on a 2 × 2 local cluster (24 power-law files of 121-7,532 rows, the UDF on Daft's own batch):
    ``into_batches(1000)`` made 24 calls of 1,000 rows or a task's remainder (this model: 25);
    ``into_batches(1667)`` made 13-16, one of them a whole 2,531-row task (this model: 14). A task may go to the
    UDF whole, so a call is bounded by the largest task, and the calls by this count.

    >>> into_batches_calls([1250, 1282, 1259, 200], 1_250)
    [1250, 1250, 32, 1250, 9, 200]
    """
    calls: list[int] = []
    for task in tasks:
        calls += [rows_per_task] * (task // rows_per_task) + ([task % rows_per_task] if task % rows_per_task else [])
    return calls


@dataclass(frozen=True)
class EvenSplit:
    """An ``into_batches`` split of uneven files, and what the footers predict of it."""

    rows_per_task: int
    calls: int  # UDF calls it leads to (into_batches_calls)
    files: int
    default_imbalance: float  # the busiest actor's rows over an even share under Daft's default
    split_imbalance: float  # the same with the split's tasks

    def why(self, actors: int, batch: int | None) -> str:
        calls = f"{batch}-row batches as the pipeline sets" if batch else "Daft's own batch, as its default does"
        return (
            f"nothing was measured, but the footers show Daft's default uneven: its {self.files:,} files, one task "
            f"each, leave the busiest of the {actors} actors {self.default_imbalance:.2f}× an even share of the "
            f"rows; into_batches({self.rows_per_task:,}) makes about {self.calls:,} calls of at most that many rows "
            f"({self.split_imbalance:.2f}×) with the UDF on {calls}: no more calls, none larger, the rows even, "
            "so it is no slower whatever the model costs"
        )


def even_split(file_rows: Sequence[int], actors: int) -> EvenSplit | None:
    """The ``into_batches`` split that evens these files out over ``actors``, or None when Daft's default is
    already within ``SPLIT_MIN_GAIN`` of what a split could do, or a split would make more tasks than files or
    calls larger than the largest file (Daft's default calls the UDF once per file of one row group).

    >>> split = even_split([7_532, 3_059, 1_806, 1_242, 930, 733, 600, 505, 433, 378, 334, 298], 4)
    >>> split.rows_per_task, split.calls, round(split.default_imbalance, 2), round(split.split_imbalance, 2)
    (2232, 10, 1.69, 1.09)
    >>> even_split([1_500] * 16, 4) is None  # already even
    True
    """
    files, rows = len(file_rows), sum(file_rows)
    if actors < 1 or files < SPLIT_MIN_TASKS_PER_ACTOR * actors or rows <= 0:
        return None
    before = default_imbalance(file_rows, actors)
    best: EvenSplit | None = None
    for per_actor in range(SPLIT_MIN_TASKS_PER_ACTOR, SPLIT_MAX_TASKS_PER_ACTOR + 1):
        rows_per_task = math.ceil(rows / (actors * per_actor))
        tasks = into_batches_tasks(file_rows, rows_per_task)
        if max(tasks) > max(file_rows):
            continue  # a call larger than Daft's default ever makes (its largest file): more memory per call
        calls = into_batches_calls(tasks, rows_per_task)
        if len(calls) > files:
            break  # more calls than Daft's default makes (one per file at least)
        after = default_imbalance(tasks, actors)
        if best is None or after < best.split_imbalance - 1e-9:
            best = EvenSplit(rows_per_task, len(calls), files, before, after)
    if best is None or best.split_imbalance * SPLIT_MIN_GAIN > before:
        return None
    return best


def even_split_plan(
    formula: ScalingPlan, data: DataProfile, split: EvenSplit, declared_batch: int | None
) -> ScalingPlan:
    """``formula`` as the split: ``into_batches(rows_per_task)`` after the read (its read merge kept, which holds
    with no scaling step too), the UDF's batch as Daft's default has it (the pipeline's declared batch, else
    Daft's own)."""
    actors = formula.concurrency
    sizes = data.file_rows
    steps = (
        f"Data: {data.rows:,} rows in {len(sizes):,} files of {min(sizes):,}-{max(sizes):,} rows (from the footers).",
        f"Total concurrency C = {actors}, {formula.actors_per_node} per node.",
    )
    step = (
        f"The footers show uneven files ({min(sizes):,}-{max(sizes):,} rows): Daft's default "
        f"leaves the busiest actor {split.default_imbalance:.2f}× an even share. Apply "
        f"df.into_batches({split.rows_per_task:,}) after the read: about {split.calls:,} calls for {actors} actors "
        f"({split.split_imbalance:.2f}×), no more than the {split.files:,} files, each call no larger than Daft's "
        "default makes it."
    )
    return own_batch_split(
        formula,
        split.rows_per_task,
        declared_batch,
        reason=(
            f"uneven input files: the busiest actor {split.default_imbalance:.2f}× an even share under Daft's default"
        ),
        steps=(*steps, step),
        partitions="left to the scan, as under Daft's default",
        into_batches=f"df.into_batches({split.rows_per_task:,}) evens the files' rows out over the tasks",
        why=split.why(actors, declared_batch),
        basis="uneven input files, from the footers (nothing measured)",
    )


def own_batch_split(
    formula: ScalingPlan,
    rows_per_task: int,
    declared_batch: int | None,
    *,
    reason: str,
    steps: tuple[str, ...],
    partitions: str,
    into_batches: str,
    why: str,
    basis: str,
) -> ScalingPlan:
    """``formula`` as ``into_batches(rows_per_task)`` before the UDF and no partition step, the UDF's batch as
    Daft's default has it (the pipeline's declared batch, else Daft's own: each task's rows whole). ``partitions``
    and ``into_batches`` say what those levers do here; ``why`` and ``basis`` make the decision."""
    levers = {
        **formula.levers,
        "partitions": partitions,
        "into_batches": into_batches,
        "udf_batch_size": (
            f"@daft.method.batch(batch_size={declared_batch}) as the pipeline sets it"
            if declared_batch
            else "Daft's own batch (each task's rows whole), as its default"
        ),
    }
    decision: dict[str, Any] = {"scaling_step": True, "why": why, "basis": basis, "udf_batch_size": declared_batch}
    return replace(
        formula,
        strategy="streaming",
        reason=reason,
        partitions=None,
        partition_op=None,
        partition_keys=(),
        into_batches=rows_per_task,
        batch_size=declared_batch or rows_per_task,
        coalesce=False,
        steps=steps,
        levers=levers,
        decision=decision,
    )


__all__ = [
    "INTO_BATCHES_EMIT_SHARE",
    "EvenSplit",
    "default_imbalance",
    "even_split",
    "even_split_plan",
    "into_batches_calls",
    "into_batches_tasks",
    "own_batch_split",
]
