"""daftscale.gpu: driver CUDA initialisation happens only where it can matter, and never fails a run.

No GPU here: the CUDA branch itself runs on GPU machines only (``python -m bench.gpu``); these tests
pin down when it is skipped, with the real torch (a CPU build) of this environment.
"""

from __future__ import annotations

import importlib.util

import pytest

from daftscale.gpu import DRIVER_CUDA_ENV, prepare_driver_cuda


def test_not_needed_without_a_gpu_request_or_on_ray() -> None:
    assert prepare_driver_cuda(0.0, "native") == "not needed"
    assert prepare_driver_cuda(1.0, "ray") == "not needed"  # Ray's UDF actors are other processes


def test_turned_off_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(DRIVER_CUDA_ENV, "0")
    assert prepare_driver_cuda(1.0, "native") == f"skipped ({DRIVER_CUDA_ENV}=0)"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed here")
def test_skipped_without_a_cuda_device(monkeypatch) -> None:
    import torch

    monkeypatch.delenv(DRIVER_CUDA_ENV, raising=False)
    if torch.cuda.is_available():
        assert prepare_driver_cuda(0.5, "native").startswith("initialised CUDA in the driver")
    else:
        assert prepare_driver_cuda(0.5, "native") == "skipped (torch sees no CUDA device)"
