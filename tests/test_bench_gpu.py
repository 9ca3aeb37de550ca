"""Issue 16: ``python -m bench.gpu`` runs end to end on a CPU (tiny model), and never needs Ray.

The GPU machine has Daft, torch and torchvision but no Ray, so these runs block ``import ray`` in every
process they start (a ``sitecustomize`` on ``PYTHONPATH``): the benchmark's native-runner path and
``daftscale.run(..., runner="native")`` inside it must not touch Ray. No GPU here: the GPU table
itself is not produced by these tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BLOCK_RAY = """
    import sys

    class _NoRay:
        # The GPU machine has no Ray: any import of it fails, as it would there.
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"No module named {name!r} (blocked: the GPU machine has no Ray)")
            return None

    sys.meta_path.insert(0, _NoRay())
"""


def _env_without_ray(tmp_path) -> dict[str, str]:
    site = tmp_path / "noray"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(BLOCK_RAY))
    path = os.pathsep.join([str(site), ROOT, os.path.join(ROOT, "src")])
    return {**os.environ, "PYTHONPATH": path, "DAFT_PROGRESS_BAR": "0"}


def test_daftscale_imports_without_ray(tmp_path) -> None:
    code = "import daftscale, daftscale.run, daftscale.cli, daftscale.watchdog, daftscale.gpu, bench.gpu; print('ok')"
    done = subprocess.run(
        [sys.executable, "-c", code], env=_env_without_ray(tmp_path), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


@pytest.mark.slow
def test_gpu_bench_tiny_on_cpu_without_ray(tmp_path) -> None:
    out = tmp_path / "out"
    command = [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--tiny", "--images", "32", "--out", str(out)]
    command += ["--configs", "bound-model,daftscale,hang-repro", "--timeout", "150"]
    env = _env_without_ray(tmp_path)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "gpu_results.json").read_text())
    runs = {r["config"]: r for r in results["runs"]}
    assert runs["bound-model"]["status"] == "ok" and runs["bound-model"]["rows"] >= 32
    # daftscale.run on the native runner, in a process where Ray cannot be imported: every image through.
    assert runs["daftscale"]["status"] == "ok", runs["daftscale"].get("output_tail")
    assert runs["daftscale"]["rows"] == 32 and runs["daftscale"]["actors"] == 1
    assert runs["hang-repro"]["status"] == "skipped (needs CUDA)"
    table = (out / "gpu_results.md").read_text()
    assert table.startswith("| configuration |") and "| daftscale | ok |" in table
    assert "| daftscale | ok |" in done.stdout  # the table is printed too


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed here")
def test_gpu_bench_without_torchvision_says_so(tmp_path) -> None:
    command = [sys.executable, "-m", "bench.gpu", "--device", "cpu", "--images", "8", "--out", str(tmp_path)]
    env = _env_without_ray(tmp_path)
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "bench.gpu: torchvision is not installed: install it beside torch, or pass --tiny (a small CNN, not ResNet-50)"
    )
