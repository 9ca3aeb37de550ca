"""daftscale: scale Daft workflows from one machine to a Ray cluster, with the numbers right.

Profile the data and the cluster, choose shuffle (``repartition``) or streaming (``into_batches``),
compute the numbers with Daft's scaling guide's formulas, apply them to a DataFrame, run, measure and explain.

>>> import daftscale
>>> p = daftscale.plan(daftscale.profile(rows=1_000_000, bytes_per_row=100),
...                    daftscale.ClusterSpec(nodes=4), concurrency=16, batch_size=64)
>>> p.partitions
977
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# Each public name and the module that owns it. They are imported on first use (PEP 562), not here: a UDF actor
# process imports daftscale.udf to run the instrumented model, and must not pay for the planner, the runner
# and the report (about 0.3 s of imports per actor, several actors starting at once on a node's cores).
_EXPORTS = {
    "ClusterSpec": "cluster",
    "discover": "cluster",
    "ClusterError": "errors",
    "ConfigError": "errors",
    "DaftscaleError": "errors",
    "GpuRequestError": "errors",
    "PipelineError": "errors",
    "PlanError": "errors",
    "ProfileError": "errors",
    "RunError": "errors",
    "Pipeline": "pipeline",
    "load_pipeline": "pipeline",
    "pipeline": "pipeline",
    "PlanWarning": "plan",
    "ScalingPlan": "plan",
    "UdfResources": "plan",
    "plan": "plan",
    "PlanHandle": "plan_handle",
    "SampledPlan": "plan_handle",
    "ColumnProfile": "profile",
    "DataProfile": "profile",
    "UdfProfile": "profile",
    "profile": "profile",
    "profile_dataframe": "profile",
    "profile_numbers": "profile",
    "profile_parquet": "profile",
    "RunReport": "report",
    "Session": "run",
    "run": "run",
    "Costs": "simulate",
    "SimulationResult": "simulate",
    "simulate": "simulate",
    "TuneResult": "tune",
    "tune": "tune",
    "actor_udf": "udf",
    "profile_udf": "udfprofile",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'daftscale' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"daftscale.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


class _Package(types.ModuleType):
    """The package module, which keeps each public function when its own submodule is first imported.

    Python sets ``daftscale.plan`` to the submodule ``daftscale.plan`` once that module is loaded, which with lazy
    exports may happen after ``daftscale.plan`` the function was looked up; the public API means the function
    (``plan``, ``pipeline``, ``profile``, ``run``, ``simulate``, ``tune``), as it did when the package imported
    everything up front."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:
    from daftscale.cluster import ClusterSpec, discover
    from daftscale.errors import (
        ClusterError,
        ConfigError,
        DaftscaleError,
        GpuRequestError,
        PipelineError,
        PlanError,
        ProfileError,
        RunError,
    )
    from daftscale.pipeline import Pipeline, load_pipeline, pipeline
    from daftscale.plan import PlanWarning, ScalingPlan, UdfResources, plan
    from daftscale.plan_handle import PlanHandle, SampledPlan
    from daftscale.profile import (
        ColumnProfile,
        DataProfile,
        UdfProfile,
        profile,
        profile_dataframe,
        profile_numbers,
        profile_parquet,
    )
    from daftscale.report import RunReport
    from daftscale.run import Session, run
    from daftscale.simulate import Costs, SimulationResult, simulate
    from daftscale.tune import TuneResult, tune
    from daftscale.udf import actor_udf
    from daftscale.udfprofile import profile_udf

__version__ = "0.1.0"

__all__ = [
    "ClusterError",
    "ClusterSpec",
    "ColumnProfile",
    "ConfigError",
    "Costs",
    "DaftscaleError",
    "DataProfile",
    "GpuRequestError",
    "Pipeline",
    "PipelineError",
    "PlanError",
    "PlanHandle",
    "PlanWarning",
    "ProfileError",
    "RunError",
    "RunReport",
    "SampledPlan",
    "ScalingPlan",
    "Session",
    "SimulationResult",
    "TuneResult",
    "UdfProfile",
    "UdfResources",
    "actor_udf",
    "discover",
    "load_pipeline",
    "pipeline",
    "plan",
    "profile",
    "profile_dataframe",
    "profile_numbers",
    "profile_parquet",
    "profile_udf",
    "run",
    "simulate",
    "tune",
]
