"""The configurations the bench compares: their names, the seed recipe's fixed numbers, the expert's grid
of hand choices, and the tuned configuration's sample and budget. The harness (:mod:`bench.harness`)
runs them; the predictions (:mod:`bench.predict`) model the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from bench.workloads import Workload

CONFIGS = (
    "daft-default",
    "seed-recipe",
    "daft-dynamic-batching",
    "ray-data",
    "ray-data-recommended",
    "expert",
    "daftscale",
    "daftscale-tuned",
)
# What `python -m bench` runs unless --configs says otherwise: daftscale-tuned's search (a minute per
# workload at --quick) would take the seven workloads past the quick run's half hour.
DEFAULT_CONFIGS = tuple(c for c in CONFIGS if c != "daftscale-tuned")
# The configurations a daftscale user has without daftscale: the targets compare daftscale with these.
PEERS = ("daft-default", "seed-recipe", "daft-dynamic-batching", "ray-data", "ray-data-recommended", "expert")

# daftscale-tuned: `daftscale tune` on this share of the workload's rows, within this many seconds, then a
# full run of the winning plan. The tuning time is reported beside the run (`tune_s`), not in `wall_s`.
# --quick halves the budget: four searches of 120 s would take --quick past its 20 minutes.
TUNE_SAMPLE = 0.25
TUNE_BUDGET_S = 120.0
QUICK_TUNE_BUDGET_S = 60.0

# The seed's fixed numbers: recipe 1 (light data) repartition(100), recipe 2 (heavy data) into_batches(64),
# and "Batch Size 64" for the UDF in both.
SEED_PARTITIONS = 100
SEED_BATCH = 64


@dataclass(frozen=True)
class ExpertPoint:
    """One hand choice of the expert grid: a scaling step at the pipeline's scaling step, and a batch size."""

    name: str
    partitions: int | None  # repartition(partitions) first, if set
    into_batches: int | None  # then into_batches(rows), if set
    batch_size: int

    def scale(self, df: Any) -> Any:
        if self.partitions:
            df = df.repartition(self.partitions)
        if self.into_batches:
            df = df.into_batches(self.into_batches)
        return df


def expert_grid(workload: Workload, concurrency: int) -> list[ExpertPoint]:
    """The expert's fixed grid: four hand choices a Daft user who knows the scaling guide would try.

    No step, ``into_batches(256)``, ``repartition(C)`` and ``repartition(C) + into_batches(512)``, with UDF
    batch 64 or 256 as each usually goes. The expert knows the data: the batch is capped at the UDF's rows
    over the actors (so none idles) and at what fits a declared memory budget (W4), and a repeated point
    is dropped.

    >>> from bench.workloads import Costs
    >>> [p.name for p in expert_grid(Workload("w", "w", "light", (10_000,), Costs(0.02, 0.001)), 8)]
    ['none, B=256', 'into_batches(256), B=256', 'repartition(8), B=64', 'repartition(8) + into_batches(512), B=256']
    """
    cap = max(1, math.ceil(workload.udf_rows / concurrency))
    if workload.udf_memory and workload.decoded_bytes_per_row:
        cap = min(cap, max(1, workload.udf_memory // workload.decoded_bytes_per_row))
    points = []
    choices = ((None, None, 256), (None, 256, 256), (concurrency, None, 64), (concurrency, 512, 256))
    for partitions, rows, batch in choices:
        b = min(batch, cap)
        step = " + ".join(
            ([f"repartition({partitions})"] if partitions else []) + ([f"into_batches({rows})"] if rows else [])
        )
        point = ExpertPoint(f"{step or 'none'}, B={b}", partitions, rows, b)
        if point.name not in {p.name for p in points}:
            points.append(point)
    return points
