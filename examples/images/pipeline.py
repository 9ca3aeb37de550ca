"""Image classification: heavy rows of PNG bytes → scaling step (streaming) → decode → small CNN.

Run it with the plan made for the machine at hand, or under ``daftscale run`` on any runner::

    python examples/images/pipeline.py --report examples/images/report
    daftscale run examples/images/pipeline.py --local-cluster 2x1 --report examples/images/report

Everything is made here, nothing is downloaded: on first run the example writes ``IMAGES_ROWS``
synthetic 128×128 RGB images (default 1,000; seeded noise over colour gradients, PNG-encoded) into a
Parquet file under ``examples/images/data/``, and the classifier is a small CNN with seeded random
weights (a stand-in for your model: swap in a real checkpoint in ``Classifier.__init__``). On a
machine with CUDA the model runs on the GPU (``--udf-gpus 1``); ``python -m bench.gpu`` measures GPU runs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import daft
import numpy as np
from daft.functions import decode_image, resize

import daftscale

ROWS = int(os.environ.get("IMAGES_ROWS", "1000"))
SIDE = 128  # stored image size: ~50 KB of PNG per row, so the data is heavy (a binary column)
MODEL_SIDE = 64  # the CNN's input size; Daft resizes after decoding
CLASSES = 10
DATA = Path(os.environ.get("IMAGES_DATA", Path(__file__).parent / "data" / f"images-{ROWS}.parquet"))


def make_images(path: Path, rows: int) -> Path:
    """Write ``rows`` seeded synthetic PNG images to ``path`` (skip if it exists); returns the path."""
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, SIDE, dtype=np.float32)
    images = []
    for _ in range(rows):
        colour = rng.uniform(0, 255, size=3).astype(np.float32)
        gradient = ramp[:, None, None] * colour[None, None, :] + ramp[None, :, None] * (255 - colour)[None, None, :]
        noise = rng.normal(0, 24, size=(SIDE, SIDE, 3))
        pixels = np.clip(gradient / 2 + noise, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="RGB").save(buffer, format="PNG")
        images.append(buffer.getvalue())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    # Small row groups so Daft can split the file into several scan tasks.
    pq.write_table(pa.table({"id": np.arange(rows), "image": images}), tmp, row_group_size=128)
    tmp.replace(path)  # atomic: a concurrent run never reads half a file
    return path


class Classifier:
    """A plain class: daftscale turns it into a Daft actor UDF (one model per actor, built once)."""

    def __init__(self, threads: int = 1, seed: int = 0) -> None:
        import torch
        from torch import nn

        # One actor per CPU (the plan's udf_cpus): more torch threads than that would oversubscribe cores.
        torch.set_num_threads(max(1, threads))
        torch.manual_seed(seed)  # random but reproducible weights: the same image gets the same class
        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, CLASSES),
        ).eval()
        self.model.to(self.device)

    def __call__(self, images: list[np.ndarray]) -> list[int]:
        batch = self.torch.from_numpy(np.stack(images)).to(self.device)  # N × H × W × C, uint8
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        with self.torch.inference_mode():
            logits = self.model(batch)
        return logits.argmax(dim=1).cpu().tolist()


@daftscale.pipeline
def build(plan: daftscale.PlanHandle) -> daft.DataFrame:
    df = daft.read_parquet(str(make_images(DATA, ROWS)))
    df = plan.apply(df)  # heavy rows of image bytes: stream them to the model in into_batches(B) tasks
    df = df.with_column("pixels", resize(decode_image(df["image"], mode="RGB"), MODEL_SIDE, MODEL_SIDE))
    threads = int(plan.udf_cpus) or 1
    classify = plan.udf(Classifier, return_dtype=daft.DataType.int64(), init_kwargs={"threads": threads})
    return df.select("id", classify(df["pixels"]).alias("label"))


if __name__ == "__main__":
    build.main()
