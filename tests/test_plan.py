"""The planner's formulas and choices, without Ray (pure functions), and apply() on real Daft."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from daftscale import ClusterSpec, ConfigError, PlanError, ScalingPlan, UdfProfile, UdfResources, plan
from daftscale.config import BATCH_MEMORY_FRACTION, DAFT_SECONDS_PER_CALL_FLOOR, DEFAULT_PARTITION_BYTES_TARGET
from daftscale.plan import (
    PLAN_INPUT_KEYS,
    PLAN_JSON_KEYS,
    actors_per_node,
    aggregation_partitions,
    balanced_batch_size,
    max_partitions,
    memory_bounded_batch_size,
    merged_scan_task_bytes,
    min_rows_per_partition,
    overhead_bounded_batch_size,
    recommended_partitions,
    shuffle_task_rows,
)
from daftscale.profile import profile_numbers

SEED_CLUSTER = ClusterSpec(nodes=4)


def test_seed_worked_example_exactly() -> None:
    p = plan(profile_numbers(1_000_000, 100), SEED_CLUSTER, concurrency=16, batch_size=64)
    assert p.strategy == "shuffle"
    assert (p.actors_per_node, p.min_rows_per_partition, p.max_partitions, p.partitions) == (4, 256, 3906, 977)
    assert p.batch_size == 64 and p.concurrency == 16
    assert p.partition_bytes_target is None
    assert p.inputs["rows"] == 1_000_000 and p.inputs["total_concurrency"] == 16
    assert p.warnings == ()


def test_formula_functions_match_the_seed() -> None:
    assert actors_per_node(16, 4) == 4
    assert min_rows_per_partition(64, 4) == 256
    assert max_partitions(1_000_000, 256) == 3906
    assert recommended_partitions(1_000_000, 16, 256, 4) == 977


def test_uneven_concurrency_uses_busiest_node_and_warns() -> None:
    p = plan(profile_numbers(100_000, 50), SEED_CLUSTER, concurrency=10, batch_size=32)
    assert p.actors_per_node == 3
    assert p.min_rows_per_partition == 96
    assert "CONCURRENCY_NOT_MULTIPLE_OF_NODES" in p.warning_codes()


counts = st.integers(min_value=1, max_value=10**9)


@settings(max_examples=300, deadline=None)
@given(
    rows=counts,
    nodes=st.integers(1, 1000),
    concurrency=st.integers(1, 8000),
    batch=st.integers(1, 4096),
    k=st.integers(1, 16),
)
def test_shuffle_invariants(rows: int, nodes: int, concurrency: int, batch: int, k: int) -> None:
    p = plan(
        profile_numbers(rows, 100),
        ClusterSpec(nodes=nodes),
        concurrency=concurrency,
        batch_size=batch,
        batches_per_task=k,
        strategy="shuffle",
    )
    a = math.ceil(concurrency / nodes)
    assert p.actors_per_node == a
    assert p.min_rows_per_partition == batch * a
    assert p.max_partitions == max(1, rows // (batch * a))
    assert p.partitions is not None
    assert 1 <= p.partitions <= p.max_partitions
    if p.max_partitions >= concurrency:
        assert p.partitions >= concurrency
    assert p.partitions == min(p.max_partitions, max(concurrency, math.ceil(rows / (k * batch * a))))
    # CPUs unknown here, so no finer task lever: each partition is one task.
    assert p.into_batches is None
    if rows < concurrency * batch:
        assert "TOO_FEW_ROWS" in p.warning_codes()
    else:
        assert "TOO_FEW_ROWS" not in p.warning_codes()


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 100_000), nodes=st.integers(1, 16), concurrency=st.integers(1, 64))
def test_the_guides_default_batch_yields_so_every_actor_gets_one(rows: int, nodes: int, concurrency: int) -> None:
    # No batch size requested and no UDF profile: B is the guide's 64, unless that would leave actors without a
    # batch (fewer rows than C × 64), when it is R // C, as a profile's B is capped.
    p = plan(profile_numbers(rows, 46), ClusterSpec(nodes=nodes), concurrency=concurrency, strategy="shuffle")
    assert p.batch_size == min(64, max(1, rows // concurrency))
    if rows >= concurrency:
        assert math.ceil(rows / p.batch_size) >= concurrency
        assert "TOO_FEW_ROWS" not in p.warning_codes()


def test_a_small_job_spreads_its_rows_over_every_actor() -> None:
    # The bench's W3: 384 rows, 8 actors. B = 64 gave 6 calls and left 2 actors idle; B = 48 gives each one.
    p = plan(profile_numbers(384, 46), SEED_CLUSTER, concurrency=8)
    assert p.batch_size == 48
    assert "capped at R / C = 48 so every actor gets a batch" in p.explain()
    requested = plan(profile_numbers(384, 46), SEED_CLUSTER, concurrency=8, batch_size=64)
    assert requested.batch_size == 64 and "TOO_FEW_ROWS" in requested.warning_codes()


@settings(max_examples=300, deadline=None)
@given(
    rows=counts,
    nodes=st.integers(1, 256),
    cpus=st.integers(1, 64),
    concurrency=st.integers(1, 2000),
    batch=st.integers(1, 4096),
    strategy=st.sampled_from(["shuffle", "streaming"]),
)
def test_tasks_hold_whole_batches(
    rows: int, nodes: int, cpus: int, concurrency: int, batch: int, strategy: str
) -> None:
    # Rows per task are a whole number of UDF batches, so no call carries a task's leftover rows; a shuffle's
    # task lever cuts each partition into at least two tasks and leaves formula 1's partition count alone.
    cluster = ClusterSpec(nodes=nodes, cpus_per_node=cpus)
    p = plan(profile_numbers(rows, 100), cluster, concurrency=concurrency, batch_size=batch, strategy=strategy)
    if p.into_batches is not None:
        assert p.into_batches % p.batch_size == 0 and p.into_batches >= p.batch_size
    if strategy == "shuffle":
        assert p.partitions == recommended_partitions(rows, p.concurrency, p.min_rows_per_partition, 4)
        if p.into_batches is not None:
            assert 2 * p.into_batches <= math.ceil(rows / p.partitions)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 10**9),
    bytes_per_row=st.floats(1, 64 * 2**20),
    nodes=st.integers(1, 64),
    cpus=st.integers(1, 64),
    memory_gib=st.integers(1, 512),
    batch=st.integers(1, 4096),
)
def test_streaming_batch_and_partition_within_memory(
    rows: int, bytes_per_row: float, nodes: int, cpus: int, memory_gib: int, batch: int
) -> None:
    cluster = ClusterSpec(nodes=nodes, cpus_per_node=cpus, memory_per_node=memory_gib << 30)
    try:
        p = plan(profile_numbers(rows, bytes_per_row), cluster, batch_size=batch, strategy="streaming")
    except PlanError:
        # Only when not even one decoded row fits an actor's share of node memory.
        per_actor = (memory_gib << 30) / cpus
        assert per_actor * BATCH_MEMORY_FRACTION < bytes_per_row * p_inflation()
        return
    # Rows per task: B × A (one batch per actor on the node), at least B.
    assert p.partitions is None and p.batch_size <= p.into_batches <= p.batch_size * p.actors_per_node
    assert 1 <= p.batch_size <= batch
    per_actor = (memory_gib << 30) // p.actors_per_node
    assert p.batch_size * bytes_per_row * p.inputs["inflation"] <= per_actor * BATCH_MEMORY_FRACTION + 1e-6
    assert (p.batch_size < batch) == ("BATCH_LOWERED_FOR_MEMORY" in p.warning_codes())
    assert p.partition_bytes_target is not None
    assert p.partition_bytes_target <= DEFAULT_PARTITION_BYTES_TARGET
    assert p.partition_bytes_target * cpus * p.inputs["inflation"] <= (memory_gib << 30) * 0.5 + 1
    below = p.partition_bytes_target < DEFAULT_PARTITION_BYTES_TARGET
    assert below == ("PARTITION_BELOW_TARGET_FOR_MEMORY" in p.warning_codes())


def p_inflation() -> float:
    from daftscale.config import DEFAULT_INFLATION

    return DEFAULT_INFLATION


@settings(max_examples=200, deadline=None)
@given(fixed=st.floats(0, 5), per_row=st.floats(1e-7, 1), target=st.floats(0.01, 0.9))
def test_overhead_bound_is_the_smallest_batch_meeting_the_target(fixed: float, per_row: float, target: float) -> None:
    b = overhead_bounded_batch_size(fixed, per_row, target)
    assert b >= 1

    def share(n: int) -> float:
        return fixed / (fixed + n * per_row) if fixed else 0.0

    assert share(b) <= target + 1e-6
    if b > 1:
        assert share(b - 1) > target - 1e-6


@settings(max_examples=200, deadline=None)
@given(fixed=st.floats(1e-4, 5), per_row=st.floats(1e-6, 1), rows_per_actor=st.integers(1, 10**8))
def test_balanced_batch_minimises_overhead_plus_tail(fixed: float, per_row: float, rows_per_actor: int) -> None:
    b = balanced_batch_size(fixed, per_row, rows_per_actor)

    def stage_cost(n: float) -> float:  # per-call overhead over the stage + half the last call
        return rows_per_actor * fixed / n + (fixed + n * per_row) / 2

    assert b >= 1
    # The rule rounds the continuous optimum up, so b or b - 1 is the best whole batch: nothing further away beats it.
    nearest = min(stage_cost(b), stage_cost(b - 1) if b > 1 else math.inf)
    for other in (b + 1, 2 * b, max(1, b // 2), max(1, b - 2)):
        if other not in (b, b - 1):
            assert nearest <= stage_cost(other) * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 10**12),
    bytes_per_row=st.floats(0, 1e6),
    slots=st.one_of(st.none(), st.floats(1, 10_000)),
    target=st.integers(1 << 20, 1 << 32),
)
def test_aggregation_partitions_are_task_slots_grown_for_size_and_capped_at_daft_own(
    rows: int, bytes_per_row: float, slots: float | None, target: int
) -> None:
    partitions = aggregation_partitions(rows, bytes_per_row, slots, target)
    assert 1 <= partitions <= 200, "never above Daft's own cap, so never more tasks than Daft's default"
    assert partitions >= min(200, math.floor(slots or 1)), "every task slot gets a partition"
    if partitions < 200:
        assert partitions * target >= rows * bytes_per_row * (1 - 1e-9), "no partition over the target"
    assert aggregation_partitions(rows * 2, bytes_per_row, slots, target) >= partitions, "more data, no fewer"


@given(
    files=st.integers(1, 100_000),
    bytes_per_file=st.integers(1, 1 << 34),
    slots=st.one_of(st.none(), st.floats(1, 4_096)),
)
def test_merged_read_tasks_are_fewer_never_too_few_and_never_above_daft_own_size(
    files: int, bytes_per_file: int, slots: float | None
) -> None:
    total = files * bytes_per_file
    size = merged_scan_task_bytes(files, total, slots)
    if size is None:
        return
    assert slots is not None and files > 4 * slots, "only when Daft's default has many files per task slot"
    assert size <= 96 * 1024 * 1024, "never above Daft's own minimum task size"
    assert size >= 2 * bytes_per_file, "only files well below the task size are merged"
    tasks = math.ceil(total / size)
    assert tasks < files, "fewer read tasks than files"
    assert tasks >= 2 * slots, "at least two read tasks per task slot"


def test_a_plan_for_many_tiny_files_merges_them_and_one_for_few_files_does_not() -> None:
    from dataclasses import replace

    base = profile_numbers(20_000, 50)
    many = replace(base, files=500, uncompressed_bytes=1_000_000)
    few = replace(base, files=8, uncompressed_bytes=1_000_000)
    cluster = ClusterSpec(nodes=2, cpus_per_node=4)
    merged = plan(many, cluster, concurrency=4)
    assert merged.execution_config == {
        "enable_scan_task_split_and_merge": True,
        "scan_tasks_min_size_bytes": 62_500,
        "scan_tasks_max_size_bytes": 125_000,
    }
    assert "read_tasks" in merged.levers and "scan_tasks_min_size_bytes=62500" in merged.to_code()
    assert plan(few, cluster, concurrency=4).execution_config == {}
    assert plan(many, ClusterSpec(nodes=2), concurrency=4).execution_config == {}, "task slots unknown"


def test_memory_bound() -> None:
    assert memory_bounded_batch_size(8 << 30, 3 << 20) == int((8 << 30) * BATCH_MEMORY_FRACTION // (3 << 20))
    assert memory_bounded_batch_size(100, 0) is None


def test_strategy_choice_by_bytes_and_columns() -> None:
    assert plan(profile_numbers(1000, 200), SEED_CLUSTER).strategy == "shuffle"
    assert plan(profile_numbers(1000, 2_000_000), SEED_CLUSTER).strategy == "streaming"
    forced = plan(profile_numbers(1000, 200), SEED_CLUSTER, strategy="streaming")
    assert forced.strategy == "streaming" and "requested" in forced.reason
    keyed = plan(profile_numbers(1000, 2_000_000), SEED_CLUSTER, keys=["id"])
    assert keyed.strategy == "shuffle" and keyed.partition_keys == ("id",) and keyed.partition_op == "repartition"
    with pytest.raises(ConfigError):
        plan(profile_numbers(1000, 200), SEED_CLUSTER, keys=["id"], strategy="streaming")


def test_concurrency_defaults_to_capacity_and_is_clamped() -> None:
    cluster = ClusterSpec(nodes=4, cpus_per_node=8, gpus_per_node=2)
    assert plan(profile_numbers(10**6, 100), cluster).concurrency == 32
    gpu = plan(profile_numbers(10**6, 100), cluster, udf=UdfResources(gpus=0.5))
    assert gpu.concurrency == 16 and gpu.udf_gpus == 0.5
    over = plan(profile_numbers(10**6, 100), cluster, concurrency=20, udf=UdfResources(gpus=1))
    assert over.concurrency == 8
    assert "CONCURRENCY_EXCEEDS_CLUSTER" in over.warning_codes()
    with pytest.raises(PlanError, match="GPU"):
        plan(profile_numbers(10**6, 100), ClusterSpec(nodes=2, cpus_per_node=4), udf=UdfResources(gpus=1))


def test_gpu_batch_bound_uses_gpu_memory() -> None:
    cluster = ClusterSpec(nodes=2, cpus_per_node=16, gpus_per_node=1, gpu_memory_per_gpu=16 << 30)
    p = plan(profile_numbers(10**6, 50 << 20), cluster, udf=UdfResources(gpus=1), batch_size=512)
    expected = int((16 << 30) * BATCH_MEMORY_FRACTION // ((50 << 20) * p.inputs["inflation"]))
    assert p.batch_size == expected
    assert "BATCH_LOWERED_FOR_MEMORY" in p.warning_codes()


def test_a_batch_lowered_for_memory_keeps_the_tasks_rows() -> None:
    # Memory bounds a call's decoded rows, not a task's rows as read: the bench's W4 (1 MiB decoded per row in a
    # 48 MiB actor, B lowered 64 -> 24) ran 48-row tasks with its actors 74-78 % busy; B × A of the B the costs
    # chose (here 128 rows, floored to whole batches of 24) kept them 92 % busy.
    costs = UdfProfile(seconds_per_row=0.00456, seconds_per_batch=0.0062)
    cluster = ClusterSpec(nodes=4, cpus_per_node=4)
    data = profile_numbers(12_000, 2048, heavy=True)
    free = plan(data, cluster, concurrency=8, udf_profile=costs)
    tight = plan(data, cluster, concurrency=8, udf_profile=costs, udf=UdfResources(memory=48 << 20),
                 udf_memory_per_row=1 << 20)  # fmt: skip
    assert free.batch_size == 64 and free.into_batches == 128
    assert tight.batch_size == 24 and "BATCH_LOWERED_FOR_MEMORY" in tight.warning_codes()
    assert tight.into_batches == 120 and tight.into_batches % tight.batch_size == 0
    assert "memory bounds a call's decoded rows, not a task's" in tight.explain()


def test_udf_profile_chooses_batch_from_fixed_vs_per_row_cost() -> None:
    udf_profile = UdfProfile(seconds_per_row=0.0005, seconds_per_batch=0.020)
    # 62,500 rows per actor: the balance rule's sqrt(2 × 62,500 × 20 ms / 0.5 ms) beats the overhead target's 360.
    p = plan(profile_numbers(1_000_000, 100), SEED_CLUSTER, concurrency=16, udf_profile=udf_profile)
    assert p.batch_size == balanced_batch_size(0.020, 0.0005, 1_000_000 / 16) == 2237
    assert udf_profile.overhead_share(p.batch_size) <= 0.10
    # 1,000 rows per actor: the balance rule wants 283, under the overhead target's 360, which stays.
    short = plan(profile_numbers(16_000, 100), SEED_CLUSTER, concurrency=16, udf_profile=udf_profile)
    assert short.batch_size == 360
    small = plan(profile_numbers(1_000_000, 100), SEED_CLUSTER, concurrency=16, batch_size=8, udf_profile=udf_profile)
    assert "BATCH_OVERHEAD_DOMINATES" in small.warning_codes()
    tiny = plan(profile_numbers(1000, 100), SEED_CLUSTER, concurrency=16, udf_profile=udf_profile)
    assert tiny.batch_size == 1000 // 16


def test_a_profile_with_no_per_call_cost_is_planned_at_dafts_own_cost_per_call() -> None:
    # profile_udf times the body in-process: a cheap per-row function can fit 0 ms per call, and planned from 0,
    # B would be 1 (a call per row, each paying Daft's hand-over).
    free_calls = UdfProfile(seconds_per_row=1e-5, seconds_per_batch=0.0)
    p = plan(profile_numbers(1_000_000, 100), SEED_CLUSTER, concurrency=16, udf_profile=free_calls)
    assert p.batch_size == balanced_batch_size(DAFT_SECONDS_PER_CALL_FLOOR, 1e-5, 1_000_000 / 16) == 5000
    assert any("raised to Daft's own cost per call" in step for step in p.steps)


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1_000, 10**7),
    concurrency=st.integers(1, 64),
    fixed=st.floats(0.0, 0.05),
    per_row=st.floats(1e-6, 0.05),
)
def test_a_profiled_batch_never_drops_below_what_dafts_per_call_cost_affords(
    rows: int, concurrency: int, fixed: float, per_row: float
) -> None:
    cluster = ClusterSpec(nodes=1, cpus_per_node=64, memory_per_node=1 << 40)
    p = plan(
        profile_numbers(rows, 100),
        cluster,
        concurrency=concurrency,
        udf_profile=UdfProfile(seconds_per_row=per_row, seconds_per_batch=fixed),
    )
    floor = overhead_bounded_batch_size(DAFT_SECONDS_PER_CALL_FLOOR, per_row)
    assert p.batch_size >= min(floor, max(1, rows // concurrency))


def test_models_running_at_once_share_the_clusters_actors() -> None:
    cluster = ClusterSpec(nodes=2, cpus_per_node=8)
    one = plan(profile_numbers(100_000, 100), cluster)
    two = plan(profile_numbers(100_000, 100), cluster, models=2)
    assert (one.concurrency, two.concurrency) == (16, 8) and two.inputs["models"] == 2 and "models" not in one.inputs
    asked = plan(profile_numbers(100_000, 100), cluster, models=2, concurrency=12)
    assert asked.concurrency == 8 and "CONCURRENCY_EXCEEDS_CLUSTER" in asked.warning_codes()
    with pytest.raises(PlanError, match="3 models need an actor each"):
        plan(profile_numbers(1000, 100), ClusterSpec(nodes=1, cpus_per_node=2), models=3)
    with pytest.raises(ConfigError):
        plan(profile_numbers(1000, 100), cluster, models=0)


def test_one_row_too_big_is_a_plan_error() -> None:
    cluster = ClusterSpec(nodes=1, cpus_per_node=1, memory_per_node=1 << 20)
    with pytest.raises(PlanError, match="one row"):
        plan(profile_numbers(10, 10 << 20), cluster)


def test_bad_numbers_are_config_errors() -> None:
    for kwargs in ({"concurrency": 0}, {"batch_size": -1}, {"batches_per_task": 0}):
        with pytest.raises(ConfigError):
            plan(profile_numbers(100, 10), SEED_CLUSTER, **kwargs)
    with pytest.raises(ConfigError):
        profile_numbers(0, 10)
    with pytest.raises(ConfigError):
        UdfResources.of(gpus=-1)
    with pytest.raises(ConfigError):
        plan(profile_numbers(100, 10), ClusterSpec(nodes=1, gpus_per_node=4), udf=UdfResources(gpus=1.5))


def test_json_round_trip_and_keys() -> None:
    p = plan(profile_numbers(1_000_000, 100), SEED_CLUSTER, concurrency=16, batch_size=64)
    data = p.to_dict()
    assert set(PLAN_JSON_KEYS) <= data.keys()
    assert set(PLAN_INPUT_KEYS) <= data["inputs"].keys()
    assert ScalingPlan.from_json(p.to_json()) == p
    with pytest.raises(PlanError):
        ScalingPlan.from_json('{"hello": 1}')
    with pytest.raises(PlanError):
        ScalingPlan.from_json("not json")


def test_explain_and_code_carry_the_users_numbers() -> None:
    p = plan(profile_numbers(1_000_000, 100), SEED_CLUSTER, concurrency=16, batch_size=64)
    text = p.explain()
    for needle in ("ceil(16 / 4) = 4", "64 × 4 = 256", "1,000,000 / 256", "977"):
        assert needle in text
    code = p.to_code()
    assert "df.repartition(977)" in code and "max_concurrency=16" in code and "batch_size=64" in code
    heavy = plan(profile_numbers(10_000, 1 << 20), SEED_CLUSTER, batch_size=32)
    assert "df.into_batches(32)" in heavy.to_code()


def test_into_partitions_only_for_even_inputs() -> None:
    from dataclasses import replace

    base = profile_numbers(100_000, 100)
    one_file = replace(base, files=1, min_rows_per_file=100_000, max_rows_per_file=100_000)
    even = replace(base, files=4, min_rows_per_file=25_000, max_rows_per_file=25_000)
    skewed = replace(base, files=4, min_rows_per_file=1_000, max_rows_per_file=97_000)
    assert plan(one_file, SEED_CLUSTER, concurrency=8).partition_op == "into_partitions"
    assert plan(even, SEED_CLUSTER, concurrency=8).partition_op == "into_partitions"
    assert plan(skewed, SEED_CLUSTER, concurrency=8).partition_op == "repartition"
    assert plan(base, SEED_CLUSTER, concurrency=8).partition_op == "repartition"


# ---------------------------------------------------------------------------------------------------
# apply() on real Daft, on the shared local multi-node Ray cluster


def _partitions(df) -> list:
    import ray

    # On the Ray runner iter_partitions yields object references to the materialised partitions.
    return [ray.get(part) if isinstance(part, ray.ObjectRef) else part for part in df.iter_partitions()]


def _partition_sizes(df) -> list[int]:
    return [len(part) for part in _partitions(df)]


@pytest.mark.ray
@pytest.mark.parametrize("op_files", [0, 1])
def test_apply_shuffle_gives_the_planned_partition_count(op_files: int) -> None:
    from dataclasses import replace

    import daft

    profile = profile_numbers(5_000, 40)
    if op_files:
        profile = replace(profile, files=1, min_rows_per_file=5_000, max_rows_per_file=5_000)
    # CPUs undeclared: no task lever after the shuffle, so the output partitions are the shuffle's.
    p = plan(profile, ClusterSpec(nodes=2), concurrency=4, batch_size=50)
    assert p.strategy == "shuffle" and p.partitions == 13 and p.into_batches is None
    assert p.partition_op == ("into_partitions" if op_files else "repartition")
    df = p.apply(daft.from_pydict({"path": [f"img/{i}.jpg" for i in range(5_000)]})).collect()
    sizes = _partition_sizes(df)
    assert len(sizes) == p.partitions
    assert sum(sizes) == 5_000


@pytest.mark.ray
def test_apply_shuffle_then_finer_tasks() -> None:
    import daft

    p = plan(profile_numbers(2_400, 40), ClusterSpec(nodes=2, cpus_per_node=2), batch_size=50)
    # ceil(2,400 / (4 tasks × 4 CPUs)) = 150, three whole 50-row batches; partitions of 400 hold two such tasks
    assert p.partitions == 6 and p.into_batches == 150
    df = p.apply(daft.from_pydict({"id": list(range(2_400))})).collect()
    sizes = _partition_sizes(df)
    # into_batches is best effort (Daft emits from 0.8 × T rows and may carry a remainder): the tasks are
    # finer than the 6 partitions of 400 rows, and none is as large as two of them.
    assert sum(sizes) == 2_400 and len(sizes) > p.partitions and max(sizes) < 2 * 400
    assert sorted(df.to_pydict()["id"]) == list(range(2_400))
    # Partitions of ~385 rows would hold one 300-row task and a remainder: no lever there (Daft was seen
    # to pass such a partition on whole).
    assert plan(profile_numbers(5_000, 40), ClusterSpec(nodes=2, cpus_per_node=2), batch_size=50).into_batches is None


@pytest.mark.ray
def test_apply_hash_shuffle_on_keys() -> None:
    import daft

    p = plan(profile_numbers(2_000, 40), ClusterSpec(nodes=2, cpus_per_node=2), batch_size=50, keys=["k"])
    df = p.apply(daft.from_pydict({"k": [i % 13 for i in range(2_000)], "v": list(range(2_000))})).collect()
    parts = _partitions(df)
    assert len(parts) == p.partitions
    seen: dict[int, int] = {}
    for index, part in enumerate(parts):
        for key in set(part.to_pydict()["k"]):
            assert seen.setdefault(key, index) == index  # each key lives in exactly one partition


class _BatchLength:
    """Returns each call's batch length for every row of it: what the UDF really received."""

    def __call__(self, x: list[int]) -> list[int]:
        return [len(x)] * len(x)


@pytest.mark.ray
def test_apply_streaming_batches_reaching_the_udf_are_bounded() -> None:
    import daft

    p = plan(profile_numbers(3_000, 200_000), ClusterSpec(nodes=2, cpus_per_node=2), batch_size=40)
    # into_batches sets rows per task (B × A = 40 × 2); plan.udf's batch_size bounds each call at B.
    assert p.strategy == "streaming" and p.batch_size == 40 and p.into_batches == 80
    df = p.apply(daft.from_pydict({"x": list(range(3_000))}))
    length = p.udf(_BatchLength, return_dtype=daft.DataType.int64())
    out = df.with_column("n", length(df["x"])).collect().to_pydict()
    assert sorted(out["x"]) == list(range(3_000))
    assert max(out["n"]) <= p.batch_size


def test_shuffle_task_lever_keeps_formula_partitions() -> None:
    cluster = ClusterSpec(nodes=4, cpus_per_node=4)
    p = plan(profile_numbers(38_400, 40), cluster, concurrency=8, batch_size=363)
    assert p.partitions == recommended_partitions(38_400, 8, 363 * 2, 4)  # formula 1, unchanged
    assert p.into_batches == shuffle_task_rows(38_400, p.partitions, 363, 16) == 726  # 2 whole batches
    assert "into_batches(726)" in p.to_code()
    seed = plan(profile_numbers(1_000_000, 40), cluster, concurrency=16, batch_size=64)
    assert seed.partitions == 977 and seed.into_batches is None


def test_a_udf_call_is_found_in_plan_text_that_daft_wraps_inside_its_name() -> None:
    # Daft wraps a long plan line onto the next, after "|" and spaces, even inside a UDF call's name
    # ("...Embed.__call__-314621-" then "|     0(col(text))"): found all the same, so the layout decisions that
    # read where the UDF runs are not left to a sample run, and no user UDF is mistaken for a plain read.
    import daft

    from daftscale.scaling_plan import calls_udf, operators_above_first_udf

    @daft.cls(max_concurrency=1)
    class AModelWhoseQualifiedNameIsLongEnoughToBeWrappedByDaft:
        @daft.method.batch(return_dtype=daft.DataType.int64())
        def __call__(self, texts):
            return [len(t) for t in texts.to_pylist()]

    df = daft.from_pydict({"id": [1, 2], "text": ["a", "bb"]})
    scored = df.with_column("n", AModelWhoseQualifiedNameIsLongEnoughToBeWrappedByDaft()(df["text"]))
    assert "\n|" in scored._builder.pretty_print(simple=False).split("AModelWhose")[1].split("(col(text))")[0]
    assert calls_udf(scored) and not calls_udf(df)
    assert operators_above_first_udf(scored.where(daft.col("n") > 1)) == ["Filter"]
