"""``python -m bench.gpu``: images through a real model on one GPU, under every way a user would run it.

Makes its own synthetic JPEGs (Parquet, one binary column), then runs decode → resize 224 →
ResNet-50 (torchvision, random weights, fp16, channels-last) under:

- ``daft-default``: plain Daft, one ``gpus=1`` actor, no scaling step, Daft's own batch;
- ``seed-recipe``: plain Daft with Daft's scaling guide's numbers: ``into_batches(64)``, batch 64;
- ``daftscale``: ``daftscale.run`` with nothing but the GPU request (``udf=UdfResources.of(gpus=1)``), as a user would;
- ``daftscale-gpus-0.5`` / ``daftscale-gpus-0.25``: several actors sharing the GPU, to overlap their
  host-side work (stacking, host→device copies) with the GPU's;
- the bounds: ``bound-decode`` (decode + resize alone, no model) and ``bound-model`` (the model
  alone, on device-resident data at batch 512);
- ``hang-repro``: ``daft-default`` without initialising CUDA in the driver first, with a short
  timeout: the hang measured on an H200 (see bench/README.md, "GPU hang").

The plain Daft configurations initialise CUDA in the driver first, as daftscale does on this path
(see ``daftscale.gpu``): without it they hung on the machine measured. Every configuration runs in its
own process with a timeout (a hang costs at most that), while ``nvidia-smi`` is sampled every 0.5 s.
Writes ``gpu_results.json`` and ``gpu_results.md`` into ``--out`` and prints the table.

Needs Daft and a CUDA build of torch with torchvision; never Ray (the native runner). Without
torchvision, ``--tiny`` swaps in a small CNN so the whole script runs on a CPU (``--device cpu``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "out-gpu")

# Model input side (ResNet-50's) and the synthetic JPEGs' side (decode + resize both do real work).
MODEL_SIDE = 224
IMAGE_SIDE = 256
# Distinct JPEGs made; the dataset repeats them. Decoding costs the same for a repeat, and encoding
# 40,000 distinct images would cost the benchmark more time than the runs.
DISTINCT_IMAGES = 256
# Batch of the model-alone bound: large enough that per-call overhead vanishes (measured on an H200:
# 17,350 images/s at 512).
BOUND_MODEL_BATCH = 512

# In run order: the comparisons first, the hang reproduction last (a budget that runs out skips the tail).
CONFIGS = (
    "bound-decode",
    "bound-model",
    "daftscale",
    "seed-recipe",
    "daft-default",
    "daftscale-gpus-0.5",
    "daftscale-gpus-0.25",
    "hang-repro",
)
# The whole benchmark's time limit (JPEGs included): a GPU session's device time is short, so every
# configuration's timeout is cut to what is left, and one that cannot get MIN_CONFIG_S is skipped.
DEFAULT_BUDGET_S = 450
MIN_CONFIG_S = 30
# A hang shows within a minute (the measured one: no batch for 120 s after the model loaded within
# seconds); the reproduction gets this long instead of the full per-configuration timeout.
HANG_REPRO_TIMEOUT_S = 75


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40_000, help="rows (default 40,000)")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where the model runs")
    parser.add_argument("--tiny", action="store_true", help="a small CNN instead of ResNet-50 (no torchvision)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from: " + ", ".join(CONFIGS))
    parser.add_argument("--timeout", type=float, default=150, help="seconds per configuration (default 150)")
    parser.add_argument(
        "--budget", type=float, default=DEFAULT_BUDGET_S, help=f"seconds for everything (default {DEFAULT_BUDGET_S})"
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="output directory (default bench/out-gpu)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    for name in args.configs:
        if name not in CONFIGS:
            parser.error(f"unknown configuration {name!r}: pick from {', '.join(CONFIGS)}")
    return args


# ---------------------------------------------------------------------------------------------------
# The model


def model_factory(device: str, tiny: bool) -> Any:
    """Build the benchmark's model on ``device``: ResNet-50 (fp16 on CUDA, channels-last) or the tiny CNN."""
    import torch

    if tiny:
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, 3, stride=4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(16, 1000),
        )
    else:
        from torchvision.models import resnet50

        torch.manual_seed(0)
        net = resnet50(weights=None)  # random weights: nothing downloads
    dtype = torch.float16 if device == "cuda" else torch.float32  # fp16 convolutions are a GPU thing
    return net.to(device=device, dtype=dtype, memory_format=torch.channels_last).eval(), dtype


class Classifier:
    """The UDF's model: uint8 HWC images in, class ids out (host→device copy and normalise included)."""

    def __init__(self, device: str = "cuda", tiny: bool = False) -> None:
        self.device = device
        self.net, self.dtype = model_factory(device, tiny)

    def __call__(self, images: list) -> list[int]:
        import numpy as np
        import torch

        batch = torch.from_numpy(np.stack([np.asarray(i) for i in images]))
        with torch.inference_mode():
            x = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(self.dtype).div_(255)
            x = x.contiguous(memory_format=torch.channels_last)
            return self.net(x).argmax(1).cpu().tolist()  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------
# Data


def make_jpegs(path: str, rows: int) -> str:
    """Write ``rows`` synthetic JPEGs (``DISTINCT_IMAGES`` distinct ones, repeated) to Parquet at ``path``."""
    import daft
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from daft.functions import encode_image

    if os.path.exists(path) and pq.read_metadata(path).num_rows == rows:
        return path
    rng = np.random.default_rng(0)
    side = np.linspace(0, 255, IMAGE_SIDE, dtype=np.float32)
    images = []
    for _ in range(min(DISTINCT_IMAGES, rows)):
        # Smooth gradients plus noise: JPEG-sized like a photo, not like flat colour or pure noise.
        base = np.add.outer(side * rng.uniform(0.2, 1), side * rng.uniform(0.2, 1)) / 2
        noise = rng.normal(0, 20, (IMAGE_SIDE, IMAGE_SIDE, 3))
        images.append(np.clip(base[..., None] + noise, 0, 255).astype(np.uint8))
    df = daft.from_pydict({"img": images}).with_column("img", daft.col("img").cast(daft.DataType.image("RGB")))
    encoded = df.select(encode_image(daft.col("img"), "JPEG").alias("jpeg")).to_pydict()["jpeg"]
    table = pa.table(
        {"id": pa.array(range(rows), pa.int64()), "jpeg": [encoded[i % len(encoded)] for i in range(rows)]}
    )
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pq.write_table(table, path + ".tmp", row_group_size=max(1, rows // 16))
    os.replace(path + ".tmp", path)
    return path


def decoded(df: Any) -> Any:
    import daft
    from daft.functions import decode_image, resize

    return df.with_column("pixels", resize(decode_image(daft.col("jpeg"), mode="RGB"), MODEL_SIDE, MODEL_SIDE))


# ---------------------------------------------------------------------------------------------------
# One configuration (runs in its own process)


def _drain(df: Any) -> int:
    rows = 0
    for part in df.iter_partitions():
        rows += len(part)
    return rows


def _plain_daft(args: argparse.Namespace, *, batch_size: int | None, into_batches: int | None) -> dict[str, Any]:
    import daft

    gpus = 1 if args.device == "cuda" else 0
    method = daft.method.batch(return_dtype=daft.DataType.int64(), batch_size=batch_size)
    udf_class = type("Model", (), {"__init__": _init_for(args), "__call__": method(_call)})
    model = daft.cls(udf_class, gpus=gpus, max_concurrency=1)()
    df = daft.read_parquet(args.data)
    if into_batches:
        df = df.into_batches(into_batches)
    df = decoded(df).select("id", model(daft.col("pixels")).alias("label"))
    start = time.perf_counter()
    rows = _drain(df)
    return {"wall_s": time.perf_counter() - start, "rows": rows, "batch_size": batch_size, "actors": 1}


def _init_for(args: argparse.Namespace) -> Any:
    device, tiny = args.device, args.tiny

    def __init__(self: Any) -> None:
        self.model = Classifier(device, tiny)

    return __init__


def _call(self: Any, images: Any) -> list[int]:
    return self.model(images.to_pylist())  # type: ignore[no-any-return]


def _daftscale(args: argparse.Namespace, gpus: float) -> dict[str, Any]:
    import daft

    import daftscale

    device, tiny = args.device, args.tiny

    @daftscale.pipeline
    def build(plan: daftscale.PlanHandle) -> daft.DataFrame:
        df = plan.apply(daft.read_parquet(args.data))
        model = plan.udf(Classifier, return_dtype=daft.DataType.int64(), init_kwargs={"device": device, "tiny": tiny})
        return decoded(df).select("id", model(daft.col("pixels")).alias("label"))

    options: dict[str, Any] = {}
    if device == "cuda":
        options["udf"] = daftscale.UdfResources.of(gpus=gpus)  # the only thing a user adds for a GPU model
    else:
        options["concurrency"] = max(1, round(1 / gpus))  # the same actor counts, on CPUs
    report = daftscale.run(build, runner="native", progress=False, **options)
    if report.status != "ok":
        raise RuntimeError(f"daftscale run ended {report.status}")
    plan = report.plan
    return {
        "wall_s": report.wall_s,
        "plan_s": report.plan_s,
        "rows": report.rows_out,
        "batch_size": plan.get("batch_size"),
        "into_batches": plan.get("into_batches"),
        "actors": report.actors,
        "actor_utilization": report.actor_utilization,
    }


def _bound_decode(args: argparse.Namespace) -> dict[str, Any]:
    import daft

    df = decoded(daft.read_parquet(args.data)).select("id", "pixels")
    start = time.perf_counter()
    rows = _drain(df)
    return {"wall_s": time.perf_counter() - start, "rows": rows}


def _bound_model(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    net, dtype = model_factory(args.device, args.tiny)
    batch = min(BOUND_MODEL_BATCH, args.images)
    x = torch.rand(batch, 3, MODEL_SIDE, MODEL_SIDE, device=args.device).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    calls = max(1, round(args.images / batch))
    with torch.inference_mode():
        net(x)  # warm-up: kernel selection is not throughput
        _sync(args.device)
        start = time.perf_counter()
        for _ in range(calls):
            net(x).argmax(1)
        _sync(args.device)
    wall = time.perf_counter() - start
    return {"wall_s": wall, "rows": calls * batch, "batch_size": batch}


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _init_driver_cuda(args: argparse.Namespace) -> None:
    """What daftscale does before a native GPU query (daftscale.gpu), for the plain Daft configurations."""
    if args.device == "cuda":
        import torch

        torch.zeros(1, device="cuda")


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Run one configuration here and return its measurements."""
    import daft

    daft.set_runner_native()
    name = args.worker
    if name == "bound-decode":
        return _bound_decode(args)
    if name == "bound-model":
        return _bound_model(args)
    if name == "daft-default":
        _init_driver_cuda(args)
        return _plain_daft(args, batch_size=None, into_batches=None)
    if name == "seed-recipe":
        _init_driver_cuda(args)
        return _plain_daft(args, batch_size=64, into_batches=64)
    if name == "hang-repro":
        return _plain_daft(args, batch_size=None, into_batches=None)  # no driver CUDA init: the measured hang
    if name.startswith("daftscale"):
        gpus = float(name.rsplit("-", 1)[1]) if name != "daftscale" else 1.0
        return _daftscale(args, gpus)
    raise ValueError(name)


# ---------------------------------------------------------------------------------------------------
# The driver: one process per configuration, nvidia-smi sampled meanwhile


class GpuSampler:
    """``nvidia-smi`` every 0.5 s in a thread: utilisation % and memory used (MiB) of GPU 0."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.available = _has_nvidia_smi()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        if self.available:
            self._thread.start()

    def _loop(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                out = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                util, mem = (float(v) for v in out.splitlines()[0].split(",")[:2])
                self.samples.append((util, mem))
            self._stop.wait(0.5)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self.available:
            self._thread.join(timeout=10)
        if not self.samples:
            return {}
        utils = [u for u, _ in self.samples]
        busy = [u for u in utils if u > 0]
        return {
            "gpu_samples": len(utils),
            "gpu_util_mean_pct": round(sum(utils) / len(utils), 1),
            # While the GPU did anything: start-up and tail left out.
            "gpu_util_busy_mean_pct": round(sum(busy) / len(busy), 1) if busy else 0.0,
            "gpu_util_peak_pct": max(utils),
            "gpu_mem_peak_mib": max(m for _, m in self.samples),
        }


def _has_nvidia_smi() -> bool:
    try:
        subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def run_config(args: argparse.Namespace, name: str, data: str, left_s: float | None = None) -> dict[str, Any]:
    """Run one configuration in a child process with a timeout; its whole process group dies with it."""
    if name == "hang-repro" and args.device != "cuda":
        return {"config": name, "status": "skipped (needs CUDA)"}
    result_path = os.path.join(args.out, f".{name}.json")
    with contextlib.suppress(FileNotFoundError):
        os.remove(result_path)
    command = [sys.executable, "-m", "bench.gpu", "--worker", name, "--data", data, "--result", result_path]
    command += ["--images", str(args.images), "--device", args.device] + (["--tiny"] if args.tiny else [])
    timeout = min(args.timeout, HANG_REPRO_TIMEOUT_S) if name == "hang-repro" else args.timeout
    if left_s is not None:
        if left_s < MIN_CONFIG_S:
            return {"config": name, "status": f"skipped (budget: {left_s:.0f} s left)"}
        timeout = min(timeout, left_s)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")]),
    }
    env.setdefault("DAFT_PROGRESS_BAR", "0")
    sampler = GpuSampler()
    began = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the worker and Daft's UDF processes with it
        output, _ = proc.communicate()
        status = f"timed out after {timeout:.0f} s (hung?)"
    row: dict[str, Any] = {"config": name, "status": status, "process_s": round(time.perf_counter() - began, 2)}
    row.update(sampler.stop())
    if os.path.exists(result_path):
        with open(result_path) as handle:
            row.update(json.load(handle))
        os.remove(result_path)
    if status != "ok":
        row["output_tail"] = (output or "")[-1500:]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    head = "| configuration | status | wall s | images/s | batch | actors | GPU util mean / busy / peak % "
    head += "| GPU mem peak MiB |"
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        wall = r.get("wall_s")
        rate = f"{r['rows'] / wall:,.0f}" if wall and r.get("rows") else ""
        util = (
            f"{r['gpu_util_mean_pct']:.0f} / {r['gpu_util_busy_mean_pct']:.0f} / {r['gpu_util_peak_pct']:.0f}"
            if "gpu_util_mean_pct" in r
            else "n/a"
        )
        lines.append(
            f"| {r['config']} | {r['status']} | {f'{wall:.2f}' if wall else ''} | {rate} | "
            f"{r.get('batch_size') or ''} | {r.get('actors') or ''} | {util} | {r.get('gpu_mem_peak_mib', 'n/a')} |"
        )
    return "\n".join(lines)


def check_environment(args: argparse.Namespace) -> str | None:
    """The one-line reason this machine cannot run the benchmark as asked, or ``None``."""
    if importlib.util.find_spec("daft") is None:
        return "Daft is not installed: pip install daft (the benchmark runs on Daft's native runner)"
    if importlib.util.find_spec("psutil") is None:
        return "psutil is not installed: pip install psutil (daftscale reads this machine's memory with it)"
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed: install a CUDA build of torch (and torchvision)"
    if not args.tiny and importlib.util.find_spec("torchvision") is None:
        return "torchvision is not installed: install it beside torch, or pass --tiny (a small CNN, not ResNet-50)"
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            return "torch sees no CUDA device: run on a GPU machine, or pass --device cpu --tiny"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(args)
        with open(args.result + ".tmp", "w") as handle:
            json.dump(result, handle)
        os.replace(args.result + ".tmp", args.result)
        return 0
    problem = check_environment(args)
    if problem:
        print(f"bench.gpu: {problem}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    began = time.time()
    data = make_jpegs(os.path.join(args.out, f"jpegs-{args.images}.parquet"), args.images)
    print(f"bench.gpu: {args.images:,} JPEGs in {data} ({time.time() - began:.1f} s)", file=sys.stderr)
    rows = []
    for name in args.configs:
        row = run_config(args, name, data, left_s=args.budget - (time.time() - began))
        rows.append(row)
        wall = f", wall {row['wall_s']:.2f} s" if "wall_s" in row else ""
        print(f"bench.gpu: {name}: {row['status']}{wall}", file=sys.stderr)
    import torch

    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
            "torch": torch.__version__,
            "daft": _version("daft"),
        },
        "images": args.images,
        "model": "tiny CNN" if args.tiny else "ResNet-50 (torchvision, random weights)",
        "device": args.device,
        "total_s": round(time.time() - began, 1),
        "runs": rows,
    }
    text = table(rows)
    _write(os.path.join(args.out, "gpu_results.json"), json.dumps(results, indent=2))
    _write(os.path.join(args.out, "gpu_results.md"), text + "\n")
    print(text)
    return 0


def _version(package: str) -> str | None:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version(package)
    return None


def _write(path: str, text: str) -> None:
    with open(path + ".tmp", "w") as handle:
        handle.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    sys.exit(main())
