"""Quickstart pipeline: score image paths with a model, scaled by daftscale.

Runs as-is, two ways:

    python examples/quickstart/pipeline.py                      # plan for this machine, run natively
    daftscale run examples/quickstart/pipeline.py --local-cluster 2x2 --report quickstart-report

The data (a Parquet table of 12,000 fake image paths) is written beside this file on first use. The
"decode" and the model are synthetic stand-ins that sleep, in place of reading an image and calling a
GPU model, so the example needs no data download, no weights and no GPU.
"""

from __future__ import annotations

import os
import time

import daft
import pyarrow as pa
import pyarrow.parquet as pq

import daftscale

# 12,000 rows: enough for calibration to measure the model on a 5 % sample before it plans (a job under
# ten times its sample is planned with nothing measured). The file is named by its rows.
ROWS = 12_000
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", f"paths-{ROWS}.parquet")


def make_data(path: str = DATA, rows: int = ROWS) -> str:
    """Write the light table (ids and image paths) the pipeline reads; nothing is downloaded."""
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        table = pa.table({"id": list(range(rows)), "path": [f"images/{i:06d}.jpg" for i in range(rows)]})
        pq.write_table(table, path + ".tmp")
        os.replace(path + ".tmp", path)
    return path


@daft.func(return_dtype=daft.DataType.int64())
def decode(path: str) -> int:
    """The per-row "heavy read": a stand-in for fetching and decoding one image (1 ms)."""
    time.sleep(0.001)
    return 1000 + len(path)


class Scorer:
    """A plain class: daftscale turns it into a Daft actor UDF with the plan's concurrency and batch size.

    ``__init__`` runs once per actor (load the model there); ``__call__`` gets one batch as a list.
    The sleep is a synthetic stand-in for a GPU model call: 20 ms per call + 0.5 ms per row.
    """

    def __init__(self) -> None:
        self.scale = 1 / 1000

    def __call__(self, pixels: list[int]) -> list[float]:
        time.sleep(0.020 + 0.0005 * len(pixels))
        return [p * self.scale for p in pixels]


@daftscale.pipeline(batch_size=64)
def build(plan: daftscale.PlanHandle) -> daft.DataFrame:
    df = daft.read_parquet(make_data())  # the light read: ids and paths
    df = plan.apply(df)  # the scaling step: repartition(N) or into_batches(B), from the plan
    df = df.with_column("pixels", decode(df["path"]))  # heavy read, per row
    score = plan.udf(Scorer, return_dtype=daft.DataType.float64())
    return df.with_column("score", score(df["pixels"]))  # the model, in batches, on an actor pool


if __name__ == "__main__":
    build.main()
