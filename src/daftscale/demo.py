"""The embedded demo: make a small dataset, plan it for this machine or a local Ray cluster, run, report.

The workload is the one daftscale is for — a light table of paths, a per-row "heavy read" of each
path, then a model applied in batches by an actor pool — with both costs **synthetic**: the read
sleeps per row and the model sleeps ``fixed + per_row × rows`` per call, a stand-in for a GPU model
call (fixed launch/transfer cost plus per-row compute). No network, no model weights, no GPU.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from typing import Any

from daftscale.config import DEFAULT_DEMO_ROWS
from daftscale.pipeline import Pipeline

# Synthetic costs, chosen so the demo finishes in well under a minute of work on 2 cores while the
# fixed per-call cost is large enough that batch size visibly matters (DAFT_NOTES' probe used the same
# 20 ms + 0.5 ms/row model).
HEAVY_READ_S_PER_ROW = 0.0005
MODEL_FIXED_S = 0.020
MODEL_PER_ROW_S = 0.0005
DEFAULT_REPORT_DIR = "daftscale-report"
DEMO_PIPELINE_NAME = "daftscale demo"


def make_demo_data(directory: str, rows: int = DEFAULT_DEMO_ROWS) -> str:
    """Write ``paths.parquet`` (ids and fake image paths) into ``directory``; returns its path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from daftscale.config import require_positive_int

    rows = require_positive_int(rows, "rows")
    os.makedirs(directory, exist_ok=True)
    table = pa.table({"id": list(range(rows)), "path": [f"images/{i:07d}.jpg" for i in range(rows)]})
    path = os.path.join(directory, "paths.parquet")
    tmp = path + ".tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def _heavy_read(path: str) -> int:
    # Synthetic stand-in for fetching and decoding the file at `path`: sleeps, returns a "pixel count".
    time.sleep(HEAVY_READ_S_PER_ROW)
    return 1000 + len(path)


class SyntheticModel:
    """A synthetic stand-in for a GPU model call: each call sleeps ``fixed_s + per_row_s × rows``."""

    def __init__(self, fixed_s: float = MODEL_FIXED_S, per_row_s: float = MODEL_PER_ROW_S) -> None:
        self.fixed_s = fixed_s
        self.per_row_s = per_row_s

    def __call__(self, pixels: list[int]) -> list[float]:
        time.sleep(self.fixed_s + self.per_row_s * len(pixels))
        return [p / 1000.0 for p in pixels]


def demo_pipeline(data_path: str, **planner_kwargs: Any) -> Pipeline:
    """The demo as a :class:`Pipeline`: light read → scaling step → heavy read → model."""
    import daft

    from daftscale.udf import row_udf

    heavy_read = row_udf(_heavy_read, return_dtype=daft.DataType.int64())

    def build(plan: Any) -> daft.DataFrame:
        df = daft.read_parquet(data_path)
        df = plan.apply(df)
        df = df.with_column("pixels", heavy_read(df["path"]))
        model = plan.udf(SyntheticModel, return_dtype=daft.DataType.float64())
        return df.with_column("score", model(df["pixels"]))

    pipe = Pipeline(build, planner_kwargs, name=DEMO_PIPELINE_NAME)
    pipe.source = DEMO_PIPELINE_NAME
    return pipe


def _previous_demo_report(report_dir: str) -> bool:
    try:
        with open(os.path.join(report_dir, "report.json")) as handle:
            return json.load(handle).get("pipeline") == DEMO_PIPELINE_NAME
    except (OSError, ValueError, AttributeError):
        return False


def demo(
    *,
    local_cluster: str | tuple[int, int] | None = None,
    report_dir: str = DEFAULT_REPORT_DIR,
    rows: int = DEFAULT_DEMO_ROWS,
    data_dir: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    console: Any = None,
) -> Any:
    """Make the demo data, plan and run it (native runner, or a local Ray cluster ``"NxC"``), write the report.

    A report directory left by an earlier demo is replaced; any other report needs ``overwrite``.
    """
    from daftscale.run import run

    overwrite = overwrite or _previous_demo_report(report_dir)
    with tempfile.TemporaryDirectory(prefix="daftscale-demo-") as tmp:
        data_path = make_demo_data(data_dir or tmp, rows)
        return run(
            demo_pipeline(data_path),
            runner="ray" if local_cluster else "native",
            local_cluster=local_cluster,
            report_dir=report_dir,
            overwrite=overwrite,
            progress=progress,
            console=console,
        )
