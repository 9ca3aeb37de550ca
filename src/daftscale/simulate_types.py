"""The simulator's data: its defaults, the costs it runs on (:class:`Costs`) and its prediction
(:class:`SimulationResult`).

Owns every ``DEFAULT_*`` figure the simulator falls back on when neither a UDF profile, a calibration nor
an option gives the number (each named in the output as an assumption). Pure data;
:mod:`daftscale.simulate` re-exports all of it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from daftscale.config import DAFT_SECONDS_PER_CALL_FLOOR, format_bytes
from daftscale.errors import ConfigError
from daftscale.plan import ScalingPlan

# ---------------------------------------------------------------------------------------------------
# Defaults: used only when neither a UDF profile, a calibration nor an option gives the number, and then
# named in the output as assumptions.

# A small CPU model on one core: about 1 ms per row. A placeholder; profile the UDF or calibrate.
DEFAULT_SECONDS_PER_ROW = 1e-3

# Fixed cost of one UDF call inside the actor: DAFT_NOTES' probe measured 20 ms for a Python actor UDF.
DEFAULT_SECONDS_PER_BATCH = 0.020

# Per call outside the UDF body (Ray actor call round trip, Arrow serialisation): a few milliseconds.
DEFAULT_DISPATCH_S = DAFT_SECONDS_PER_CALL_FLOOR

# Per Daft task on Ray (scheduling, plan serialisation, object-store puts): tens of milliseconds.
DEFAULT_TASK_OVERHEAD_S = 0.05

# Query planning and actor-pool start (one Python process per actor, imports, __init__): seconds.
DEFAULT_STARTUP_S = 5.0

# Collecting the result to the driver after the last UDF call.
DEFAULT_TAIL_S = 0.5

# Parquet decode of narrow rows runs at about 5 M rows/s per core.
DEFAULT_SCAN_SECONDS_PER_ROW = 2e-7

# Each Ray object a shuffle writes or fetches costs scheduler and metadata work: about 100 µs for the
# small pieces of a wide shuffle.
DEFAULT_SHUFFLE_SECONDS_PER_OBJECT = 1e-4

# One 10 Gbit/s network interface per node moves shuffled bytes.
DEFAULT_NETWORK_BYTES_PER_SECOND = 1.25e9

# A call to an actor on another node adds a network round trip and the batch transfer.
DEFAULT_REMOTE_CALL_S = 0.005

# Ray's memory monitor kills workers once a node uses more than 95 % of its memory
# (RAY_memory_usage_threshold), which is what an OOM looks like on Ray.
DEFAULT_MEMORY_LIMIT_FRACTION = 0.95

# Ray sizes the object store at 30 % of node memory by default; objects beyond it spill to disk.
DEFAULT_OBJECT_STORE_FRACTION = 0.30

# Task slots per node when the cluster does not say how many CPUs it has.
DEFAULT_TASK_SLOTS_PER_NODE = 8

# Bytes per scan task when the number of input files is unknown (plans made from --rows): a typical
# Parquet file written by Spark, Daft or pyarrow.
DEFAULT_SCAN_TASK_BYTES = 256 << 20

# Rows per scan task when neither files nor bytes per row are known.
DEFAULT_SCAN_TASK_ROWS = 1_000_000

# Daft's actor_udf_ready_timeout: with more actors requested than fit, it waits this long, then goes on
# with the actors that started.
ACTOR_READY_TIMEOUT_S = 120.0

# The costs whose defaults are guesses about the user's workload (the rest are properties of Ray).
ASSUMABLE_COSTS = {
    "seconds_per_row": DEFAULT_SECONDS_PER_ROW,
    "seconds_per_batch": DEFAULT_SECONDS_PER_BATCH,
    "dispatch_s": DEFAULT_DISPATCH_S,
    "task_overhead_s": DEFAULT_TASK_OVERHEAD_S,
    "startup_s": DEFAULT_STARTUP_S,
    "tail_s": DEFAULT_TAIL_S,
}


# ---------------------------------------------------------------------------------------------------
# Costs


@dataclass(frozen=True)
class Costs:
    """What every piece of work costs, in seconds and bytes. Each default is a ``DEFAULT_*`` above.

    Attributes:
        seconds_per_row: UDF time per row of a batch, inside the actor.
        seconds_per_batch: UDF fixed time per call, inside the actor.
        dispatch_s: per call outside the UDF body (actor call, serialisation).
        task_overhead_s: per Daft task (scheduling, object-store traffic).
        startup_s: query start and actor-pool start, once per query.
        tail_s: after the last UDF call (collecting or writing the result).
        pre_udf_seconds_per_row: work per row inside a task before the UDF (a heavy read, decoding).
        scan_seconds_per_row: reading the input, per row.
        shuffle_seconds_per_object: per Ray object written or fetched by a shuffle.
        network_bytes_per_second: per node, for shuffled bytes and remote actor calls.
        remote_call_s: extra per call to an actor on another node.
        memory_per_row: decoded bytes per row in a task (None: the plan's bytes per row × inflation).
        udf_memory_per_row: working bytes per row of a batch in an actor (None: the plan's UDF profile, else
            ``memory_per_row``).
        actor_memory_bytes: resident memory of one actor besides its batches (the model).
        delivered_rows_per_call: mean rows per UDF call as Daft delivers them, when that is fewer than the
            plan's batch size (None: full batches of B rows). Upstream operators that emit small morsels (a
            join's probe side over many small files) hand the UDF fragments of a few rows each; Daft does not
            coalesce them up to B, so the calls, and with them the per-call cost, multiply. The simulator
            then sends each task's rows in calls of ``min(B, delivered_rows_per_call)`` rows (a mean: the
            spread of fragment sizes is not modelled). :func:`costs_from_report` fills it from a run's call
            records when they show more calls than full batches explain.
        source: where the numbers came from ("defaults", "udf profile", "calibration ...", "options").
        assumed: names of the fields left at their defaults, stated as assumptions in the output.
        notes: what calibration observed or could not observe.
    """

    seconds_per_row: float = DEFAULT_SECONDS_PER_ROW
    seconds_per_batch: float = DEFAULT_SECONDS_PER_BATCH
    dispatch_s: float = DEFAULT_DISPATCH_S
    task_overhead_s: float = DEFAULT_TASK_OVERHEAD_S
    startup_s: float = DEFAULT_STARTUP_S
    tail_s: float = DEFAULT_TAIL_S
    pre_udf_seconds_per_row: float = 0.0
    scan_seconds_per_row: float = DEFAULT_SCAN_SECONDS_PER_ROW
    shuffle_seconds_per_object: float = DEFAULT_SHUFFLE_SECONDS_PER_OBJECT
    network_bytes_per_second: float = DEFAULT_NETWORK_BYTES_PER_SECOND
    remote_call_s: float = DEFAULT_REMOTE_CALL_S
    memory_per_row: float | None = None
    udf_memory_per_row: float | None = None
    actor_memory_bytes: float = 0.0
    delivered_rows_per_call: float | None = None
    source: str = "defaults"
    assumed: tuple[str, ...] | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.assumed is None:
            # Left at a default, these numbers are guesses the output must own up to.
            guessed = tuple(name for name, default in ASSUMABLE_COSTS.items() if getattr(self, name) == default)
            object.__setattr__(self, "assumed", guessed)
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("source", "assumed", "notes") or value is None:
                continue
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"cost {f.name} must be a finite number of 0 or more, got {value!r}")
        if self.network_bytes_per_second <= 0:
            raise ConfigError("cost network_bytes_per_second must be above 0")
        if self.delivered_rows_per_call is not None and self.delivered_rows_per_call <= 0:
            raise ConfigError(
                f"cost delivered_rows_per_call must be above 0 rows (or None for full batches), "
                f"got {self.delivered_rows_per_call!r}"
            )

    def with_udf(self, *, seconds_per_row: float | None, seconds_per_batch: float | None, source: str) -> Costs:
        """These costs with the UDF's per-row and per-call cost replaced where given (None: unchanged)."""
        changes: dict[str, Any] = {}
        if seconds_per_row is not None:
            changes["seconds_per_row"] = seconds_per_row
        if seconds_per_batch is not None:
            changes["seconds_per_batch"] = seconds_per_batch
        if not changes:
            return self
        assumed = tuple(a for a in self.assumed or () if a not in changes)
        whole = len(changes) == 2 and self.source in ("defaults", "udf profile")
        merged = source if whole or self.source == "defaults" else f"{self.source} + {source}"
        return replace(self, **changes, assumed=assumed, source=merged)

    def call_seconds(self, rows: float) -> float:
        return self.dispatch_s + self.seconds_per_batch + rows * self.seconds_per_row

    def rows_per_call(self, batch_size: int) -> float:
        """Rows one UDF call gets under a batch size of ``batch_size``: the whole batch, unless the
        delivered fragments are smaller (``delivered_rows_per_call``).

        >>> Costs().rows_per_call(64), Costs(delivered_rows_per_call=4.7).rows_per_call(64)
        (64, 4.7)
        >>> Costs(delivered_rows_per_call=100.0).rows_per_call(64)
        64
        """
        delivered = self.delivered_rows_per_call
        return batch_size if delivered is None or delivered >= batch_size else delivered

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["assumed"] = list(self.assumed or ())
        data["notes"] = list(self.notes)
        return data

    @classmethod
    def from_plan(cls, plan: ScalingPlan) -> Costs:
        """Defaults, with the UDF's costs from the plan's UDF profile when it has one."""
        profile = plan.udf_profile or {}
        costs = cls()
        if profile.get("seconds_per_row") is not None or profile.get("seconds_per_batch") is not None:
            costs = costs.with_udf(
                seconds_per_row=profile.get("seconds_per_row"),
                seconds_per_batch=profile.get("seconds_per_batch"),
                source="udf profile",
            )
        if profile.get("memory_per_row_bytes"):
            costs = replace(costs, udf_memory_per_row=float(profile["memory_per_row_bytes"]))
        return costs


# ---------------------------------------------------------------------------------------------------
# Result


@dataclass(frozen=True)
class SimulationResult:
    """A prediction for one plan on one cluster.

    ``utilization`` is defined as in the run report: summed actor busy time over actors × span of the
    UDF stage (first call to last return); ``utilization_of_makespan`` divides by the whole makespan.
    ``node_peak_memory_bytes`` has one entry per node class ({nodes, actors, tasks, peak_bytes}).
    ``oom`` is true when a node exceeds Ray's memory threshold or when one UDF batch (``udf_batch_bytes``)
    exceeds the actor's own limit (``udf_memory_bytes``: the declared UDF memory, or a GPU UDF's GPU
    memory); ``actor_oom`` tells the second case, and ``verdict`` says which and what to change.
    """

    makespan_s: float
    utilization: float
    utilization_of_makespan: float
    first_call_s: float
    peak_memory_bytes: int
    node_peak_memory_bytes: list[dict[str, Any]]
    memory_per_node: int | None
    oom: bool
    verdict: str
    bottleneck: str
    stages: dict[str, float]
    tasks: int
    batches: int
    actors: int
    busy_s: float
    spilled_bytes: int
    timeline: list[tuple[float, float]]
    approximations: list[str]
    assumptions: list[str]
    costs: dict[str, Any]
    actor_oom: bool = False
    udf_batch_bytes: int = 0
    udf_memory_bytes: int | None = None
    plan: dict[str, Any] = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["timeline"] = [[round(t, 6), round(u, 6)] for t, u in self.timeline]
        return data

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def prediction(self) -> dict[str, Any]:
        """The summary a plan carries in ``ScalingPlan.predicted``."""
        return {
            "makespan_s": round(self.makespan_s, 3),
            "utilization": round(self.utilization, 4),
            "peak_memory_bytes": self.peak_memory_bytes,
            "oom": self.oom,
            "actor_oom": self.actor_oom,
            "bottleneck": self.bottleneck,
            "costs_source": self.costs.get("source"),
            "assumptions": list(self.assumptions),
        }

    def describe(self) -> str:
        """Plain-text summary: the headline numbers, stages, memory per node class, what was assumed."""
        lines = [
            f"makespan: {self.makespan_s:,.2f} s",
            f"utilization: {self.utilization:.1%} of {self.actors} actors over the UDF stage "
            f"({self.utilization_of_makespan:.1%} over the whole run)",
            "stages: " + ", ".join(f"{name} {seconds:,.2f} s" for name, seconds in self.stages.items()),
            f"work: {self.tasks:,} tasks, {self.batches:,} UDF calls, {self.busy_s:,.1f} actor-seconds busy",
            f"peak memory: {format_bytes(self.peak_memory_bytes)} on the busiest node"
            + (f" of {format_bytes(self.memory_per_node)}" if self.memory_per_node else ""),
        ]
        for node in self.node_peak_memory_bytes:
            lines.append(
                f"  {node['nodes']} node(s) with {node['actors']} actors: peak {format_bytes(node['peak_bytes'])}"
            )
        lines.append(f"bottleneck: {self.bottleneck}")
        lines.append(f"{'OOM' if self.oom else 'memory'}: {self.verdict}")
        if self.assumptions:
            lines.append("assumptions:")
            lines += [f"  - {a}" for a in self.assumptions]
        if self.approximations:
            lines.append("approximations:")
            lines += [f"  - {a}" for a in self.approximations]
        return "\n".join(lines)


__all__ = [
    "ACTOR_READY_TIMEOUT_S",
    "ASSUMABLE_COSTS",
    "DEFAULT_DISPATCH_S",
    "DEFAULT_MEMORY_LIMIT_FRACTION",
    "DEFAULT_NETWORK_BYTES_PER_SECOND",
    "DEFAULT_OBJECT_STORE_FRACTION",
    "DEFAULT_REMOTE_CALL_S",
    "DEFAULT_SCAN_SECONDS_PER_ROW",
    "DEFAULT_SCAN_TASK_BYTES",
    "DEFAULT_SCAN_TASK_ROWS",
    "DEFAULT_SECONDS_PER_BATCH",
    "DEFAULT_SECONDS_PER_ROW",
    "DEFAULT_SHUFFLE_SECONDS_PER_OBJECT",
    "DEFAULT_STARTUP_S",
    "DEFAULT_TAIL_S",
    "DEFAULT_TASK_OVERHEAD_S",
    "DEFAULT_TASK_SLOTS_PER_NODE",
    "Costs",
    "SimulationResult",
]
