"""daftscale: scale Daft workflows from one machine to a Ray cluster, with the numbers right.

Profile the data and the cluster, choose shuffle (``repartition``) or streaming (``into_batches``),
compute the numbers with Daft's scaling guide's formulas, apply them to a DataFrame, run, measure and explain.

>>> import daftscale
>>> p = daftscale.plan(daftscale.profile(rows=1_000_000, bytes_per_row=100),
...                    daftscale.ClusterSpec(nodes=4), concurrency=16, batch_size=64)
>>> p.partitions
977
"""

from daftscale.cluster import ClusterSpec, discover
from daftscale.errors import (
    ClusterError,
    ConfigError,
    DaftscaleError,
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
