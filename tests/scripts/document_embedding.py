"""Document embedding in the shape of Daft's AI benchmark, scaled down to run offline in seconds.

A plain Daft script: it never imports daftscale. It runs alone (``python document_embedding.py``, on
Daft's native runner) and unchanged under ``daftscale run document_embedding.py``. The input is a
Parquet file of synthetic documents made on first run; each is cut into chunks (an explode: rows out
differ from rows in), and the "model" is a synthetic stand-in for a GPU sentence embedder: each batch
sleeps a fixed 5 ms plus 0.1 ms per chunk, and a chunk's vector is seeded by its text, so it is
deterministic and unit-length like a real embedding.

Environment: SCRIPT_DATA (input Parquet), SCRIPT_OUT (output directory), SCRIPT_DOCS (documents to
make), SCRIPT_DIM (embedding size), SCRIPT_SLEEP (extra seconds per batch, to make a run long),
SCRIPT_ACTION ("write", the default, or "collect").
"""

import os
import time
import zlib

import daft
import numpy as np
from daft import col

DATA = os.environ.get("SCRIPT_DATA", "documents.parquet")
OUT = os.environ.get("SCRIPT_OUT", "embeddings")
DOCS = int(os.environ.get("SCRIPT_DOCS", "100"))
DIM = int(os.environ.get("SCRIPT_DIM", "8"))
SLEEP = float(os.environ.get("SCRIPT_SLEEP", "0"))
ACTION = os.environ.get("SCRIPT_ACTION", "write")
CHUNKS_PER_DOC = 3


def make_documents(path: str, docs: int) -> None:
    if os.path.exists(path):
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    words = ["daft", "ray", "actor", "batch", "scale", "model", "gpu", "row", "plan", "write"]
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(words, size=12 * CHUNKS_PER_DOC)) for _ in range(docs)]
    tmp = path + ".tmp"
    pq.write_table(pa.table({"doc_id": np.arange(docs), "text": texts}), tmp, row_group_size=25)
    os.replace(tmp, path)


def chunk(text: str) -> list[str]:
    words = text.split()
    size = max(1, len(words) // CHUNKS_PER_DOC)
    return [" ".join(words[i : i + size]) for i in range(0, len(words), size)]


@daft.cls(max_concurrency=2)
class EmbedderStandIn:
    def __init__(self) -> None:
        time.sleep(0.05)  # the model load

    @daft.method.batch(return_dtype=daft.DataType.list(daft.DataType.float32()), batch_size=32)
    def embed(self, chunks: daft.Series) -> list[list[float]]:
        texts = chunks.to_pylist()
        time.sleep(0.005 + 0.0001 * len(texts) + SLEEP)  # synthetic GPU cost: fixed + per chunk
        vectors = []
        for text in texts:
            vector = np.random.default_rng(zlib.crc32(text.encode())).standard_normal(DIM).astype(np.float32)
            vectors.append((vector / np.linalg.norm(vector)).tolist())
        return vectors


make_documents(DATA, DOCS)
embedder = EmbedderStandIn()
chunker = daft.func(chunk, return_dtype=daft.DataType.list(daft.DataType.string()))
df = daft.read_parquet(DATA)
df = df.with_column("chunk", chunker(col("text"))).explode("chunk")
df = df.with_column("embedding", embedder.embed(col("chunk")))
df = df.select("doc_id", "chunk", "embedding")
if ACTION == "collect":
    df.collect()
else:
    df.write_parquet(OUT)
