"""Image classification in the shape of Daft's AI benchmark, scaled down to run offline in seconds.

A plain Daft script: it never imports daftscale. It runs alone (``python image_classification.py``) and
unchanged under ``daftscale run image_classification.py``. The input is a Parquet file of synthetic PNG
images made on first run; the "model" is a synthetic stand-in for a GPU classifier: each batch sleeps a
fixed 5 ms plus 0.2 ms per row (a real model's cost shape) and labels an image by its mean pixel value.

Environment: SCRIPT_DATA (input Parquet), SCRIPT_OUT (output directory), SCRIPT_ROWS (rows to make),
SCRIPT_FAIL_AFTER (raise in the UDF after that many rows, to test failed runs).
"""

import io
import os
import time

import daft
import numpy as np
from daft import col

DATA = os.environ.get("SCRIPT_DATA", "images.parquet")
OUT = os.environ.get("SCRIPT_OUT", "labels")
ROWS = int(os.environ.get("SCRIPT_ROWS", "200"))
FAIL_AFTER = int(os.environ.get("SCRIPT_FAIL_AFTER", "-1"))

daft.set_runner_ray()  # as the benchmark does; daftscale runs it on the runner it is told to


def make_images(path: str, rows: int) -> None:
    if os.path.exists(path):
        return
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    images = []
    for _ in range(rows):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    tmp = path + ".tmp"
    pq.write_table(pa.table({"id": np.arange(rows), "image": images}), tmp, row_group_size=50)
    os.replace(tmp, path)


@daft.cls(max_concurrency=8, gpus=0)
class ResNetStandIn:
    def __init__(self) -> None:
        time.sleep(0.05)  # the model load
        self.seen = 0

    @daft.method.batch(return_dtype=daft.DataType.int64(), batch_size=100)
    def __call__(self, images: daft.Series) -> list[int]:
        arrays = images.to_pylist()
        time.sleep(0.005 + 0.0002 * len(arrays))  # synthetic GPU cost: fixed + per row
        self.seen += len(arrays)
        if 0 <= FAIL_AFTER < self.seen:
            raise RuntimeError("stand-in model failed late")
        return [int(np.asarray(a).mean()) % 10 for a in arrays]


make_images(DATA, ROWS)
classify = ResNetStandIn()
df = daft.read_parquet(DATA)
df = df.with_column("decoded", col("image").decode_image(mode="RGB"))
df = df.with_column("label", classify(col("decoded")))
df = df.select("id", "label")
df.write_parquet(OUT)
