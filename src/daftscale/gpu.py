"""GPU runs on Daft's native runner: initialise CUDA in the driver before the query.

Measured on one H200 (Daft 0.7.26, torch 2.11): a ``gpus=1`` actor UDF over decoded images hung
(the model loaded, then no batch for minutes, GPU idle) unless the driver process had initialised
CUDA itself before the query (``torch.zeros(1).cuda()``). Daft 0.7.26's native runner runs an actor
UDF in a ``python -m daft.execution.udf_worker`` child process only when every column it takes and
returns is Arrow-typed; over images (or Python objects) it runs the UDF in a thread of the driver
(checked here on CPU: the UDF's pid is the driver's). The model then initialises CUDA lazily on one of
Daft's worker threads, not the main thread; initialising it on the main thread first is the one fix
measured. The cause is not established; see bench/README.md ("GPU hang") for the write-up.

:func:`prepare_driver_cuda` does that when it can matter (native runner, the plan asks for GPUs) and
costs nothing otherwise: it never imports torch when no GPU is requested, and does nothing when torch
is missing or has no CUDA device. ``DAFTSCALE_DRIVER_CUDA=0`` turns it off.
"""

from __future__ import annotations

import importlib.util
import os
import threading

# Set to "0" to skip initialising CUDA in the driver (e.g. to reproduce the hang for a bug report).
DRIVER_CUDA_ENV = "DAFTSCALE_DRIVER_CUDA"


def prepare_driver_cuda(udf_gpus: float, runner: str) -> str:
    """Initialise CUDA in this process when a native-runner plan asks for GPUs; returns what it did.

    Runs on the calling thread, which should be the main thread (the run calls it just before the
    query starts). Never raises: a failure here must not fail a run that may not need it.
    """
    if runner != "native" or not udf_gpus:
        return "not needed"
    if os.environ.get(DRIVER_CUDA_ENV, "1") == "0":
        return f"skipped ({DRIVER_CUDA_ENV}=0)"
    if importlib.util.find_spec("torch") is None:
        return "skipped (torch is not installed)"
    try:
        import torch

        if not torch.cuda.is_available():
            return "skipped (torch sees no CUDA device)"
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
    except Exception as exc:  # a broken CUDA install shows itself in the model, with its own error
        return f"failed ({type(exc).__name__}: {exc})"
    where = "main thread" if threading.current_thread() is threading.main_thread() else "a worker thread"
    return f"initialised CUDA in the driver ({where})"


__all__ = ["DRIVER_CUDA_ENV", "prepare_driver_cuda"]
