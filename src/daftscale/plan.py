"""The planner: profile + cluster → :class:`ScalingPlan`, with Daft's scaling guide's formulas as pure functions.

The plan itself (data, JSON, ``explain``, ``apply``) is :mod:`daftscale.scaling_plan`'s, re-exported here.

Pure: frozen inputs in, a frozen plan out; no I/O and no globals. The formulas are Daft's
scaling guide's, with its worked example as the first doctest of each:

- shuffle (light data): ``A = ceil(C / N)``, ``min_rows_per_partition = B * A``,
  ``max_partitions = max(1, floor(R / min_rows))``,
  ``partitions = min(max_partitions, max(C, ceil(R / (K * min_rows))))``;
- streaming (heavy data): partitions stay large (about 1 GiB, bounded by node memory and Daft's
  inflation of decoded data) and ``into_batches(B)`` feeds the UDF, with B lowered when one decoded
  batch would not fit an actor's memory.

A plan sets three levers and says which number sets which:

1. partitions before the UDF: ``repartition(N)`` / ``into_partitions(N)`` (shuffle plans);
2. task granularity: ``into_batches(T)`` (streaming plans, and shuffle plans whose partitions are
   coarser than about 4 tasks per CPU; each batch becomes one task on Ray);
3. rows per UDF call: the UDF's ``batch_size`` (both), with ``max_concurrency`` actors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.config import (
    BATCH_MEMORY_FRACTION,
    DAFT_SECONDS_PER_CALL_FLOOR,
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCHES_PER_TASK,
    DEFAULT_INFLATION,
    DEFAULT_PARTITION_BYTES_TARGET,
    HEAVY_BYTES_PER_ROW,
    MIN_SENSIBLE_BATCH_SIZE,
    NODE_MEMORY_FRACTION_FOR_PARTITIONS,
    TARGET_BATCH_OVERHEAD_SHARE,
    format_bytes,
    require_positive_int,
    require_positive_number,
)
from daftscale.errors import ConfigError, GpuRequestError, PlanError
from daftscale.plan_formulas import (
    AGGREGATION_SETTING,
    DAFT_AGGREGATION_PARTITIONS,
    MIN_TASKS_PER_CPU,
    actors_per_node,
    aggregation_partitions,
    balanced_batch_size,
    cluster_actor_capacity,
    daft_read_bytes,
    max_partitions,
    memory_bounded_batch_size,
    merged_scan_task_bytes,
    min_rows_per_partition,
    overhead_bounded_batch_size,
    partition_bytes_bound,
    recommended_partitions,
    scan_merge_settings,
    shuffle_task_rows,
    whole_batches,
)
from daftscale.profile import DataProfile, UdfProfile
from daftscale.scaling_plan import (
    PLAN_FORMAT_VERSION,
    PLAN_INPUT_KEYS,
    PLAN_JSON_KEYS,
    PlanWarning,
    ScalingPlan,
    Strategy,
    UdfResources,
    describe_step,
)

# Above this share of an actor's time spent on the fixed per-call cost, the batch is flagged as
# overhead-dominated (the planner itself aims at TARGET_BATCH_OVERHEAD_SHARE when it chooses B).
OVERHEAD_WARNING_SHARE = 0.25

# into_partitions only splits/coalesces adjacent partitions and ignores their sizes, so it balances
# load only when input files are close to even; above this max/mean file-rows ratio, shuffle instead.
INTO_PARTITIONS_MAX_FILE_SKEW = 1.25


# Calibration (daftscale.calibrate) measures the rows Daft hands each UDF call. When they average below
# this share of the batch size, batches arrive as fragments (a join's or a shuffle's output is many small
# pieces, and a UDF's batch_size is only a maximum: Daft does not merge pieces to fill it), so the plan
# coalesces them with into_batches before the UDF. Measured on a join over a few hundred small files: 4.7
# rows per call at B = 64, and 2 to 5 times faster once into_batches merged them.
FRAGMENTED_SHARE = 0.5


# ---------------------------------------------------------------------------------------------------
# Building a plan


@dataclass
class _Builder:
    """Collects steps and warnings while the plan is computed (kept out of the frozen result)."""

    steps: list[str] = field(default_factory=list)
    warnings: list[PlanWarning] = field(default_factory=list)

    def step(self, text: str) -> None:
        self.steps.append(text)

    def warn(self, code: str, message: str) -> None:
        self.warnings.append(PlanWarning(code, message))


def choose_strategy(profile: DataProfile, *, keys: Sequence[str] = (), requested: str = "auto") -> tuple[Strategy, str]:
    """Shuffle or streaming, and why.

    >>> from daftscale.profile import profile_numbers
    >>> choose_strategy(profile_numbers(1000, 100))
    ('shuffle', 'light data: 100 B per row is below the 64.0 KiB heavy threshold and no column is heavy')
    >>> choose_strategy(profile_numbers(1000, 500_000))[0]
    'streaming'
    """
    if requested not in ("auto", "shuffle", "streaming"):
        raise ConfigError(f"--strategy must be auto, shuffle or streaming, got {requested!r}: pick one of those")
    if keys:
        if requested == "streaming":
            raise ConfigError("a join/groupby input (--keys) needs a shuffle: drop --strategy streaming or --keys")
        return "shuffle", f"join/groupby input: hash-partitioned by {', '.join(keys)}"
    if requested != "auto":
        return requested, f"requested with --strategy {requested}"  # type: ignore[return-value]
    heavy = profile.heavy_columns
    if heavy:
        whys = "; ".join(f"{c.name}: {c.why}" for c in profile.columns if c.heavy)
        return "streaming", f"heavy data ({whys})"
    if profile.heavy_hint:
        return "streaming", "declared heavy data"
    if profile.bytes_per_row >= HEAVY_BYTES_PER_ROW:
        return "streaming", (
            f"heavy data: {format_bytes(profile.bytes_per_row)} per row is at least the "
            f"{format_bytes(HEAVY_BYTES_PER_ROW)} heavy threshold"
        )
    return "shuffle", (
        f"light data: {format_bytes(profile.bytes_per_row)} per row is below the "
        f"{format_bytes(HEAVY_BYTES_PER_ROW)} heavy threshold and no column is heavy"
    )


def plan(
    profile: DataProfile,
    cluster: ClusterSpec,
    *,
    concurrency: int | None = None,
    batch_size: int | None = None,
    batches_per_task: int = DEFAULT_BATCHES_PER_TASK,
    udf: UdfResources | None = None,
    strategy: str = "auto",
    keys: Sequence[str] = (),
    udf_profile: UdfProfile | None = None,
    inflation: float = DEFAULT_INFLATION,
    rows_at_udf_per_row: float = 1.0,
    delivered_rows_per_call: float | None = None,
    udf_memory_per_row: float | None = None,
    models: int = 1,
) -> ScalingPlan:
    """Choose the strategy and compute every number for this data on this cluster.

    Args:
        profile: the data arriving at the scaling step (:func:`daftscale.profile`).
        cluster: where it runs (:class:`ClusterSpec`).
        concurrency: total UDF actors C; default: as many as the cluster can schedule.
        batch_size: rows per UDF call B; default: chosen from the UDF profile, else Daft's scaling guide's 64.
        batches_per_task: K, batches per actor per task (shuffle).
        udf: CPUs, GPUs and memory of one actor.
        strategy: ``"auto"``, ``"shuffle"`` or ``"streaming"``.
        keys: join/groupby keys; forces a hash shuffle on them.
        udf_profile: measured UDF costs; sets B from fixed vs per-row cost and the memory per row.
        inflation: in-memory size of decoded data over its profiled size.
        rows_at_udf_per_row: rows reaching the UDF per row at the scaling step (an explode after it
            multiplies them, a filter or join divides them), as calibration measured it: the formulas run
            with R at the UDF.
        delivered_rows_per_call: the mean rows per UDF call Daft delivered in a calibration run (at or
            below that run's batch size). Well short of B (``FRAGMENTED_SHARE``), a shuffle plan adds
            ``into_batches`` before the UDF so that full batches arrive.
        udf_memory_per_row: the peak bytes per row a UDF call needed in the actors, as calibration
            measured it; bounds B by the actor's memory (over the UDF profile's and the decoded size).
        models: actor UDFs the pipeline runs at once, each with C actors (a script's several ``@daft.cls``
            models): they share the cluster, so C is at most its capacity divided among them.

    Examples:
        Daft's scaling guide's worked example (1M rows, 4 nodes, 16 actors, batch 64):

        >>> from daftscale import ClusterSpec, profile_numbers
        >>> p = plan(profile_numbers(1_000_000, 100), ClusterSpec(nodes=4), concurrency=16, batch_size=64)
        >>> p.strategy, p.actors_per_node, p.min_rows_per_partition, p.max_partitions, p.partitions
        ('shuffle', 4, 256, 3906, 977)
    """
    udf = udf or UdfResources()
    keys = tuple(keys)
    k = require_positive_int(batches_per_task, "batches_per_task")
    inflation = require_positive_number(inflation, "inflation")
    rows_in = require_positive_int(profile.rows, "rows")
    growth = require_positive_number(rows_at_udf_per_row, "rows_at_udf_per_row")
    # The formulas count the rows the UDF sees; the scaling step's own lever (into_batches) counts its input's.
    rows = max(1, round(rows_in * growth))
    nodes = cluster.nodes
    if udf.gpus > 1 and not float(udf.gpus).is_integer():
        raise ConfigError(f"--udf-gpus above 1 must be a whole number, got {udf.gpus:g}: Daft accepts 0.25, 0.5, 1, 2…")
    chosen, reason = choose_strategy(profile, keys=keys, requested=strategy)
    b = _Builder()
    b.step(f"Data: {profile.describe()}. Cluster: {cluster.describe()}.")
    if rows != rows_in:
        b.step(
            f"Rows at the UDF R = {rows:,}: calibration measured {growth:.3g} rows reaching the UDF per row at "
            f"the scaling step ({rows_in:,} there), so the formulas below use R = {rows:,}."
        )

    # Concurrency C, kept within what the cluster can schedule (Daft would otherwise wait 120 s).
    models = require_positive_int(models, "models")
    capacity = cluster_actor_capacity(cluster, udf.cpus, udf.gpus)
    if udf.gpus > 0 and capacity == 0:
        # The message names `daftscale plan`'s options; `run` and `tune` name their own (cli.py).
        raise GpuRequestError(
            f"the UDF asks for {udf.gpus:g} GPU per actor but the cluster has {cluster.gpus_per_node:g} GPUs per node: "
            "pass --gpus-per-node (or use --ray to discover them), or drop --udf-gpus",
            gpus=udf.gpus,
            gpus_per_node=cluster.gpus_per_node,
        )
    resource = "GPU" if udf.gpus > 0 else "CPU"
    per = udf.gpus if udf.gpus > 0 else udf.cpus
    shared = f", shared by the pipeline's {models} models" if models > 1 else ""
    if capacity is not None and models > 1:
        # Every model's actors run at once (Daft starts each pool before the query runs).
        if capacity < models:
            raise PlanError(
                f"the pipeline's {models} models need an actor each at once, at {per:g} {resource} per actor, but "
                f"the cluster can schedule {capacity}: give each less (--udf-cpus/--udf-gpus 0.5), add nodes, or "
                "(a plain script) run each model with its author's settings (--keep-udf-settings)"
            )
        capacity //= models
    if concurrency is None:
        c = capacity if capacity else nodes
        b.step(
            f"Total concurrency C = {c}"
            + (
                f" (the cluster's {resource}s at {per:g} {resource} per actor{shared})"
                if capacity
                else " (one actor per node)"
            )
            + "."
        )
    else:
        c = require_positive_int(concurrency, "concurrency")
        b.step(f"Total concurrency C = {c} (requested).")
        if capacity is not None and c > capacity:
            b.warn(
                "CONCURRENCY_EXCEEDS_CLUSTER",
                f"{c} actors{' per model' if models > 1 else ''} need more {resource}s than the cluster has (room "
                f"for {capacity}{shared}); Daft would wait "
                f"120 s for actors that never start: concurrency lowered to {capacity}; "
                f"add nodes or lower --concurrency",
            )
            c = capacity
            b.step(f"C lowered to {c}, what the cluster can schedule.")
    if c % nodes:
        b.warn(
            "CONCURRENCY_NOT_MULTIPLE_OF_NODES",
            f"concurrency {c} is not a multiple of {nodes} nodes, so some nodes run "
            f"{math.ceil(c / nodes)} actors and others {c // nodes}: use {max(1, round(c / nodes)) * nodes}",
        )
    a = actors_per_node(c, nodes)
    b.step(f"Actors per node A = ceil(C / N) = ceil({c} / {nodes}) = {a}.")

    # Batch size B: user's, else from the UDF's fixed vs per-row cost, else Daft's scaling guide's 64.
    per_row_memory = profile.bytes_per_row * inflation
    if udf_profile and udf_profile.memory_per_row_bytes:
        per_row_memory = udf_profile.memory_per_row_bytes
    if udf_memory_per_row:
        per_row_memory = float(udf_memory_per_row)
    # Every actor gets a batch: the cap on a B the planner chooses (a profile's, or the guide's default).
    feed_all = max(1, rows // c)
    if batch_size is not None:
        batch = require_positive_int(batch_size, "batch_size")
        b.step(f"Batch size B = {batch} rows per UDF call (requested).")
    elif udf_profile is not None:
        per_row_s = udf_profile.seconds_per_row
        # A call through Daft never costs less than its own hand-over, whatever the body's fit says.
        fixed_s = max(udf_profile.seconds_per_batch, DAFT_SECONDS_PER_CALL_FLOOR)
        floored = udf_profile.seconds_per_batch < DAFT_SECONDS_PER_CALL_FLOOR
        wanted = overhead_bounded_batch_size(fixed_s, per_row_s)
        balanced = balanced_batch_size(fixed_s, per_row_s, rows / c)
        batch = min(max(wanted, balanced), feed_all)
        b.step(
            f"Batch size B = {batch}: the UDF costs {fixed_s * 1e3:.1f} ms per call"
            + (
                f" (the profile's {udf_profile.seconds_per_batch * 1e3:.1f} ms raised to Daft's own cost per call "
                f"outside the UDF, at least {DAFT_SECONDS_PER_CALL_FLOOR * 1e3:g} ms)"
                if floored
                else ""
            )
            + f" + {per_row_s * 1e3:.3f} ms per row, and B ≥ {wanted} keeps the fixed cost ≤ "
            f"{TARGET_BATCH_OVERHEAD_SHARE:.0%}"
            + (
                f"; with R / C = {rows / c:,.0f} rows per actor, B = sqrt(2 × {rows / c:,.0f} × fixed / per row) = "
                f"{balanced} trades the remaining fixed cost against the last batch's tail"
                if balanced > wanted
                else ""
            )
            + (
                f", capped at R / C = {feed_all} so every actor gets a batch"
                if feed_all < max(wanted, balanced)
                else ""
            )
            + "."
        )
    else:
        batch = DEFAULT_BATCH_SIZE
        if feed_all < batch:
            # The guide's 64 is a number we chose, not the user's: on fewer rows than C × 64 it would leave actors
            # without a batch (384 rows, 8 actors: 6 calls of 64, 2 actors idle), so it yields as a profile's B does.
            batch = feed_all
            b.step(
                f"Batch size B = {batch}: Daft's scaling guide's default of {DEFAULT_BATCH_SIZE} (no UDF profile to "
                f"choose from), capped at R / C = {feed_all} so every actor gets a batch."
            )
        else:
            b.step(f"Batch size B = {batch} (Daft's scaling guide's default; no UDF profile to choose from).")

    budget, budget_why = actor_memory_budget(cluster, udf, a)
    bound = memory_bounded_batch_size(budget or 0, per_row_memory)
    batch_before_memory = batch
    if bound is not None:
        if bound < 1:
            raise PlanError(
                f"one row needs {format_bytes(per_row_memory)} decoded but an actor has {format_bytes(budget)} "
                f"({budget_why}): give actors more memory (--udf-memory, fewer actors per node) or bigger nodes"
            )
        if batch > bound:
            b.warn(
                "BATCH_LOWERED_FOR_MEMORY",
                f"a batch of {batch} rows × {format_bytes(per_row_memory)} decoded would exceed "
                f"{BATCH_MEMORY_FRACTION:.0%} of the actor's {format_bytes(budget)} ({budget_why}): "
                f"batch lowered to {bound}; give actors more memory to keep {batch}",
            )
            b.step(f"B lowered to {bound} so a decoded batch fits the actor's memory ({budget_why}).")
            batch = bound

    if udf_profile is not None:
        share = udf_profile.overhead_share(batch)
        if share > OVERHEAD_WARNING_SHARE:
            good = overhead_bounded_batch_size(udf_profile.seconds_per_batch, udf_profile.seconds_per_row)
            b.warn(
                "BATCH_OVERHEAD_DOMINATES",
                f"at B = {batch} the UDF's fixed {udf_profile.seconds_per_batch * 1e3:.1f} ms per call is "
                f"{share:.0%} of each call: raise --batch-size to about {good} (memory permitting)",
            )
    elif batch < MIN_SENSIBLE_BATCH_SIZE:
        b.warn(
            "BATCH_OVERHEAD_DOMINATES",
            f"batch size {batch} is so small that per-call overhead likely dominates: use at least "
            f"{MIN_SENSIBLE_BATCH_SIZE}, or profile the UDF to choose",
        )
    if rows < c * batch:
        b.warn(
            "TOO_FEW_ROWS",
            f"{rows:,} rows cannot give each of {c} actors one batch of {batch}: lower --batch-size to "
            f"{max(1, math.ceil(rows / c))} or --concurrency to {max(1, rows // batch)}",
        )

    m = min_rows_per_partition(batch, a)
    upper = max_partitions(rows, m)
    b.step(f"Min rows per partition = B × A = {batch} × {a} = {m}.")
    b.step(f"Max partitions = floor(R / min rows) = floor({rows:,} / {m}) = {upper:,}.")

    partitions: int | None = None
    partition_op: str | None = None
    into_batches: int | None = None
    partition_target: int | None = None
    execution_config: dict[str, Any] = {}
    if chosen == "shuffle":
        partitions = recommended_partitions(rows, c, m, k)
        b.step(
            f"Partitions = min(max partitions, max(C, ceil(R / (K × min rows)))) = "
            f"min({upper:,}, max({c}, ceil({rows:,} / ({k} × {m})))) = {partitions:,}, "
            f"so each task carries about {k} batches per actor."
        )
        partition_op = _choose_partition_op(profile, partitions, keys)
        if partition_op == "into_partitions":
            b.step(
                f"Apply df.into_partitions({partitions}) after the light read: the input is "
                f"{'one partition' if profile.files <= 1 else 'evenly sized files'}, so splitting needs no shuffle."
            )
        else:
            args = "".join(f", {key!r}" for key in keys)
            b.step(f"Apply df.repartition({partitions}{args}) right after the light read, before the heavy read / UDF.")
        merge = read_merge(profile, cluster)
        if merge is not None:
            execution_config, merge_step = merge
            b.step(merge_step)
        # A join/groupby needs its hash partitions intact, so only a keyless shuffle gets finer tasks.
        into_batches = None if keys else shuffle_task_rows(rows, partitions, batch, cluster.total_cpus)
        if into_batches is not None:
            assert cluster.total_cpus is not None
            b.step(
                f"Then df.into_batches({into_batches}): about {MIN_TASKS_PER_CPU} tasks per CPU "
                f"(ceil({rows:,} / ({MIN_TASKS_PER_CPU} × {cluster.total_cpus:g} CPUs)) rounded to whole "
                f"{batch}-row batches), because on Ray "
                f"each batch is its own task and {partitions} partitions of ~{math.ceil(rows / partitions):,} rows "
                "would delay the actors' first batches behind the work before the UDF."
            )
    else:
        partition_target, partition_note = _streaming_partition_target(cluster, inflation, b)
        # into_batches sets rows per *task* (on Ray each batch is its own task, placed anywhere), the UDF's
        # batch_size rows per *call*; a task's calls go only to the actors on its node. B × A rows per task
        # (formula 1's min rows per partition) hand every actor on the task's node one batch at once, with
        # A times fewer tasks to schedule than B rows per task; bounded by the partition target's rows,
        # and by about MIN_TASKS_PER_CPU tasks per CPU so small inputs still reach every node's actors.
        row_bytes = max(profile.bytes_per_row * inflation, 1.0)
        # The memory bound is on a call's decoded rows, not on a task's rows as read: a task keeps the rows of
        # the B the costs chose. Measured on the bench's W4 (1 MiB decoded per row, B lowered 64 → 24, A = 2):
        # tasks of 48 rows left the actors 74-78 % busy between tasks, where the expert's 256-row tasks of
        # 48-row calls kept them 91-93 % busy.
        task_rows = min_rows_per_partition(batch_before_memory, a)
        spread = math.ceil(rows / (MIN_TASKS_PER_CPU * cluster.total_cpus)) if cluster.total_cpus else task_rows
        # Floored to whole batches (B × A already is one): the partition target is a memory bound.
        into_batches = max(batch, min(task_rows, int(partition_target // row_bytes), spread) // batch * batch)
        b.step(f"Keep partitions large: target {format_bytes(partition_target)} each ({partition_note}).")
        b.step(
            f"Apply df.into_batches({into_batches}) before the heavy UDF: each task streams "
            + (
                f"B × A = {batch} × {a} = {into_batches} rows, one {batch}-row batch for each actor on its node."
                if into_batches == m
                else f"{into_batches} rows, {batch}-row batches to the actors on its node"
                + (
                    f" (about B × A for the B = {batch_before_memory} that memory lowered: memory bounds a call's "
                    "decoded rows, not a task's)."
                    if into_batches > m
                    else "."
                )
            )
        )
        execution_config = {
            "enable_scan_task_split_and_merge": True,
            "scan_tasks_max_size_bytes": partition_target,
            "scan_tasks_min_size_bytes": max(1, partition_target // 4),
        }

    coalesce = False
    fragmented = delivered_rows_per_call is not None and delivered_rows_per_call < FRAGMENTED_SHARE * batch
    if chosen == "shuffle" and fragmented and not keys:
        # Full batches at the UDF: into_batches merges the pieces. Rows per task at the UDF as the shuffle
        # plan would cut them, else B × A (one batch per actor on the task's node) within R / C, at least
        # one batch. Not after a keyed shuffle, whose hash partitions a join/groupby needs intact.
        into_batches = into_batches or max(batch, min(m, whole_batches(rows // c, batch)))
        coalesce = True
        b.step(
            f"Calibration measured {delivered_rows_per_call:.1f} rows per UDF call on average, below "
            f"{FRAGMENTED_SHARE:.0%} of B = {batch}: Daft hands the UDF fragments (batch_size is only a maximum), "
            f"so df.into_batches({into_batches}) follows the partition step and merges them into full batches "
            "(on every runner)."
        )
    if into_batches is not None and growth != 1.0:
        # into_batches counts the rows at the scaling step; the numbers above are rows at the UDF.
        into_batches = max(1, math.ceil(into_batches / growth))
        b.step(f"into_batches counts rows at the scaling step: {into_batches:,} there (÷ {growth:.3g} rows per row).")

    levers = {
        "partitions": (
            f"df.{partition_op}({partitions}) balances the rows over {partitions} partitions"
            + ("" if into_batches else ", one task each")
            if partitions is not None
            else "left to the scan (one task per file, split/merged toward the partition target)"
        ),
        "into_batches": (
            f"df.into_batches({into_batches}) sets rows per task reaching the UDF"
            + (", merging the fragments Daft would hand it" if coalesce else "")
            if into_batches is not None
            else "not used: each partition is one task"
        ),
        **({"read_tasks": _read_tasks_lever(execution_config)} if chosen == "shuffle" and execution_config else {}),
        "udf_batch_size": f"@daft.method.batch(batch_size={batch}) sets rows per UDF call",
        "max_concurrency": f"@daft.cls(max_concurrency={c}) sets the actor pool ({a} per node)",
    }
    return ScalingPlan(
        strategy=chosen,
        reason=reason,
        inputs={
            "rows": rows,
            **(
                {"rows_at_scaling_step": rows_in, "rows_at_udf_per_row": growth}
                if rows != rows_in or growth != 1.0
                else {}
            ),
            **({"delivered_rows_per_call": delivered_rows_per_call} if delivered_rows_per_call is not None else {}),
            **({"models": models} if models > 1 else {}),
            "nodes": nodes,
            "total_concurrency": c,
            "batch_size": batch,
            "bytes_per_row": profile.bytes_per_row,
            "batches_per_task": k,
            "requested_concurrency": concurrency,
            "requested_batch_size": batch_size,
            "cpus_per_node": cluster.cpus_per_node,
            "gpus_per_node": cluster.gpus_per_node,
            "memory_per_node": cluster.memory_per_node,
            "udf_cpus": udf.cpus,
            "udf_gpus": udf.gpus,
            "udf_memory": udf.memory,
            "inflation": inflation,
            "heavy_columns": profile.heavy_columns,
            "files": profile.files,
        },
        actors_per_node=a,
        min_rows_per_partition=m,
        max_partitions=upper,
        partitions=partitions,
        partition_op=partition_op,
        partition_keys=keys,
        into_batches=into_batches,
        batch_size=batch,
        concurrency=c,
        udf_cpus=udf.cpus,
        udf_gpus=udf.gpus,
        partition_bytes_target=partition_target,
        execution_config=execution_config,
        warnings=tuple(b.warnings),
        steps=tuple(b.steps),
        levers=levers,
        cluster=cluster.to_dict(),
        udf_profile=udf_profile.to_dict() if udf_profile else None,
        coalesce=coalesce,
    )


def read_merge(read: DataProfile, cluster: ClusterSpec) -> tuple[dict[str, Any], str] | None:
    """Daft's scan-task merge settings for a Parquet read of many small files, and the plan step saying so;
    None when Daft's one task per file is fine (:func:`merged_scan_task_bytes`).

    >>> from dataclasses import replace
    >>> from daftscale import profile_numbers
    >>> many = replace(profile_numbers(6_000, 60), files=200, file_bytes=360_000)
    >>> settings, step = read_merge(many, ClusterSpec(nodes=2, cpus_per_node=2))
    >>> settings["scan_tasks_min_size_bytes"], step[:36]
    (135000, 'Read the 200 files in about 8 tasks:')
    """
    read_bytes = daft_read_bytes(read.file_bytes, read.uncompressed_bytes)
    merge_bytes = merged_scan_task_bytes(read.files, read_bytes, cluster.total_cpus)
    if merge_bytes is None or not cluster.total_cpus:
        return None
    settings = scan_merge_settings(merge_bytes)
    step = (
        f"Read the {read.files:,} files in about {round(read_bytes / merge_bytes)} tasks: Daft's default runs "
        f"one task per file ({read.files / cluster.total_cpus:.0f} per CPU, {format_bytes(read_bytes / read.files)} "
        f"each in Daft's estimate), so daft.set_execution_config({_settings_text(settings)}) merges neighbouring "
        "files (a setting, not a step: it holds with no scaling step too)."
    )
    return settings, step


def with_read_merge(plan: ScalingPlan, read: DataProfile, cluster: ClusterSpec) -> ScalingPlan:
    """``plan`` with Daft's scan-task merge (:func:`read_merge`) for ``read``, a Parquet read of many small files
    before the scaling step that the plan was not made from (one joined before it, say); unchanged when the
    plan already sets the merge (its own read, or a streaming plan's partition sizes) or none is needed.

    >>> from dataclasses import replace
    >>> from daftscale import profile_numbers
    >>> cluster = ClusterSpec(nodes=2, cpus_per_node=2)
    >>> joined = plan(profile_numbers(6_000, 60), cluster, concurrency=4)
    >>> many = replace(profile_numbers(6_000, 60), files=200, file_bytes=360_000)
    >>> with_read_merge(joined, many, cluster).execution_config["scan_tasks_min_size_bytes"]
    135000
    """
    merge = read_merge(read, cluster)
    if merge is None or "enable_scan_task_split_and_merge" in plan.execution_config:
        return plan
    settings, step = merge
    levers = {**plan.levers, "read_tasks": _read_tasks_lever(settings)}
    return replace(
        plan, execution_config={**settings, **plan.execution_config}, steps=(*plan.steps, step), levers=levers
    )


def _read_tasks_lever(settings: dict[str, Any]) -> str:
    return f"daft.set_execution_config({_settings_text(settings)}) merges the small files into fewer read tasks"


def _settings_text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in settings.items())


def with_sized_aggregations(plan: ScalingPlan, data: DataProfile, cluster: ClusterSpec) -> ScalingPlan:
    """``plan`` with the shuffle of a groupby after its UDF sized to the cluster (:func:`aggregation_partitions`),
    unless what reaches it (the plan's partitions, or with no step the files) is no more: Daft takes the smaller.

    >>> from daftscale import profile_numbers
    >>> p = plan(profile_numbers(24_000, 120), ClusterSpec(nodes=4, cpus_per_node=4), concurrency=8)
    >>> many_files = replace(profile_numbers(24_000, 120), files=300)
    >>> with_sized_aggregations(p, many_files, ClusterSpec(nodes=4, cpus_per_node=4)).execution_config
    {'shuffle_aggregation_default_partitions': 16}
    """
    if not cluster.total_cpus:
        return plan  # task slots unknown: Daft's own setting
    target = plan.partition_bytes_target or DEFAULT_PARTITION_BYTES_TARGET
    partitions = aggregation_partitions(data.rows, data.bytes_per_row, cluster.total_cpus, target)
    shuffled = plan.scaling_step and plan.strategy == "shuffle"
    # A streaming step's tasks may be more than the files (then sized whatever they are); 0 files: unknown.
    reaching = plan.partitions if shuffled else (None if plan.scaling_step else data.files or None)
    if reaching is not None and reaching <= partitions:
        return plan
    step = (
        f"A groupby after the UDF shuffles into {partitions} partitions "
        f"(daft.set_execution_config({AGGREGATION_SETTING}={partitions})): one per task slot"
        + (", more for the data's size" if partitions > math.floor(cluster.total_cpus) else "")
        + f". Daft's default is one per partition reaching it, up to {DAFT_AGGREGATION_PARTITIONS}"
        + (f" (here {min(reaching, DAFT_AGGREGATION_PARTITIONS)})." if reaching else ".")
    )
    return replace(
        plan,
        execution_config={**plan.execution_config, AGGREGATION_SETTING: partitions},
        steps=(*plan.steps, step),
        levers={**plan.levers, "aggregation partitions": f"{partitions}: task slots, for the groupby after the UDF"},
    )


def actor_memory_budget(
    cluster: ClusterSpec, udf: UdfResources, actors_on_node: int | None = None
) -> tuple[int | None, str]:
    """One actor's memory budget and why: the declared UDF memory, else a GPU UDF's share of GPU memory,
    else (CPU actors, given ``actors_on_node``) the node's memory over its actors; ``(None, "unknown")``
    when nothing bounds it. The planner sizes batches to it; the simulator checks a batch against it
    without ``actors_on_node`` (a CPU actor without a declared budget shares its node's memory, which the
    node's own verdict covers).

    >>> actor_memory_budget(ClusterSpec(nodes=1, memory_per_node=8 << 30), UdfResources(), actors_on_node=4)
    (2147483648, 'node memory 8.0 GiB / 4 actors')
    >>> actor_memory_budget(ClusterSpec(nodes=1, gpus_per_node=1, gpu_memory_per_gpu=16 << 30), UdfResources(gpus=0.5))
    (8589934592, '0.5 × 16.0 GiB GPU memory')
    """
    if udf.memory is not None:
        return udf.memory, f"--udf-memory {format_bytes(udf.memory)}"
    if udf.gpus > 0 and cluster.gpu_memory_per_gpu:
        # A fractional GPU gets that share of one GPU's memory; several GPUs pool theirs.
        budget = int(cluster.gpu_memory_per_gpu * udf.gpus)
        return budget, f"{udf.gpus:g} × {format_bytes(cluster.gpu_memory_per_gpu)} GPU memory"
    if udf.gpus == 0 and cluster.memory_per_node and actors_on_node:
        return cluster.memory_per_node // actors_on_node, (
            f"node memory {format_bytes(cluster.memory_per_node)} / {actors_on_node} actors"
        )
    return None, "unknown"


def _streaming_partition_target(cluster: ClusterSpec, inflation: float, b: _Builder) -> tuple[int, str]:
    target = DEFAULT_PARTITION_BYTES_TARGET
    if not cluster.memory_per_node:
        return target, "the scaling guide's 1 GiB; node memory unknown, so not bounded"
    slots = cluster.cpus_per_node or 1.0
    bound = partition_bytes_bound(cluster.memory_per_node, slots, inflation)
    if bound >= target:
        return target, (
            f"the scaling guide's 1 GiB fits: {format_bytes(cluster.memory_per_node)} per node holds {slots:g} such "
            f"partitions at {inflation:g}× inflation"
        )
    if bound < 1:
        raise PlanError(
            f"a node's {format_bytes(cluster.memory_per_node)} cannot hold {slots:g} partitions at once: "
            "declare more --memory-per-node"
        )
    b.warn(
        "PARTITION_BELOW_TARGET_FOR_MEMORY",
        f"partitions of 1 GiB would not fit: {format_bytes(cluster.memory_per_node)} per node × "
        f"{NODE_MEMORY_FRACTION_FOR_PARTITIONS:.0%} / ({slots:g} tasks × {inflation:g}× inflation) = "
        f"{format_bytes(bound)}: partitions target {format_bytes(bound)}; use nodes with more memory to keep 1 GiB",
    )
    return bound, f"lowered from 1 GiB so {slots:g} partitions at {inflation:g}× inflation fit in node memory"


def _choose_partition_op(profile: DataProfile, partitions: int, keys: Sequence[str]) -> str:
    if keys:
        return "repartition"
    # into_partitions splits or coalesces adjacent partitions without a shuffle; it balances only when the
    # inputs are one partition or evenly sized files, and only when it splits (files <= partitions).
    if profile.files == 1 or (
        1 < profile.files <= partitions and profile.file_row_skew <= INTO_PARTITIONS_MAX_FILE_SKEW
    ):
        return "into_partitions"
    return "repartition"


__all__ = [
    "AGGREGATION_SETTING",
    "FRAGMENTED_SHARE",
    "INTO_PARTITIONS_MAX_FILE_SKEW",
    "MIN_TASKS_PER_CPU",
    "OVERHEAD_WARNING_SHARE",
    "PLAN_FORMAT_VERSION",
    "PLAN_INPUT_KEYS",
    "PLAN_JSON_KEYS",
    "PlanWarning",
    "ScalingPlan",
    "Strategy",
    "UdfResources",
    "actor_memory_budget",
    "actors_per_node",
    "balanced_batch_size",
    "choose_strategy",
    "cluster_actor_capacity",
    "describe_step",
    "max_partitions",
    "memory_bounded_batch_size",
    "merged_scan_task_bytes",
    "min_rows_per_partition",
    "overhead_bounded_batch_size",
    "partition_bytes_bound",
    "plan",
    "read_merge",
    "recommended_partitions",
    "shuffle_task_rows",
    "whole_batches",
    "with_read_merge",
    "with_sized_aggregations",
]
