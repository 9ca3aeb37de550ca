"""What a pipeline's ``build(plan)`` receives (:class:`PlanHandle`), and the sampled plans that calibration
and the tuner run (:class:`SampledPlan`).

A :class:`~daftscale.plan.ScalingPlan` is data: the numbers and their reasons. A handle is what a build
function uses: the plan's ``apply`` at the scaling step, ``udf`` for the model, and the numbers a build
may size other things by, each named here. A handle changes what happens at the scaling step without a
different kind of plan:

- the probe's handle (``record``) records the DataFrame reaching ``apply`` and returns it unchanged, so
  the provisional plan's numbers never shape it and nothing executes;
- a sampled run's handle (``before_step``) takes the sample first, ``df.limit(n)`` (or the same head rows
  read into memory, :func:`parquet_head`) or ``df.sample(fraction)`` after a join, then applies the plan's
  scaling step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from daftscale.scaling_plan import ScalingPlan, Strategy
from daftscale.tune_grid import sample_partitions

if TYPE_CHECKING:
    import daft


@dataclass(frozen=True)
class PlanHandle:
    """The plan as a pipeline's ``build(plan)`` sees it: ``apply(df)`` at the scaling step, ``udf(Model, ...)``.

    ``plan`` is the whole plan (data). ``before_step`` runs on the DataFrame before the plan's step (a
    sample); ``record``, when set, replaces the step: it is handed the DataFrame, which ``apply`` returns
    unchanged (the probe).

    >>> import daft
    >>> from daftscale import ClusterSpec, plan, profile_numbers
    >>> p = plan(profile_numbers(1000, 2_000_000), ClusterSpec(nodes=1, cpus_per_node=2), batch_size=16, concurrency=2)
    >>> handle = PlanHandle(p, before_step=lambda df: df.limit(100))
    >>> handle.batch_size, handle.concurrency, handle.probing
    (16, 2, False)
    >>> len(handle.apply(daft.from_pydict({"x": list(range(1000))})).to_pydict()["x"])
    100
    """

    plan: ScalingPlan
    before_step: Callable[[daft.DataFrame], daft.DataFrame] | None = None
    record: Callable[[daft.DataFrame], None] | None = None
    # Called on each ``udf(...)``: the probe counts the models, whose pools share the cluster.
    on_udf: Callable[[], None] | None = None

    @property
    def probing(self) -> bool:
        """True for the probe's handle: ``apply`` only records the DataFrame at the scaling step."""
        return self.record is not None

    def apply(self, df: daft.DataFrame) -> daft.DataFrame:
        """Insert the scaling step (:meth:`ScalingPlan.apply`), after the handle's sample; the probe records ``df``."""
        if self.record is not None:
            self.record(df)
            return df
        if self.before_step is not None:
            df = self.before_step(df)
        return self.plan.apply(df)

    def udf(self, cls: type, **options: Any) -> Any:
        """The model class as an instrumented Daft actor UDF with the plan's settings (:meth:`ScalingPlan.udf`)."""
        if self.on_udf is not None:
            self.on_udf()
        return self.plan.udf(cls, **options)

    # The plan's numbers a build function may size its own steps by (threads per actor, say).

    @property
    def strategy(self) -> Strategy:
        return self.plan.strategy

    @property
    def batch_size(self) -> int:
        return self.plan.batch_size

    @property
    def udf_batch_size(self) -> int | None:
        return self.plan.udf_batch_size

    @property
    def concurrency(self) -> int:
        return self.plan.concurrency

    @property
    def udf_cpus(self) -> float:
        return self.plan.udf_cpus

    @property
    def udf_gpus(self) -> float:
        return self.plan.udf_gpus

    @property
    def partitions(self) -> int | None:
        return self.plan.partitions

    @property
    def into_batches(self) -> int | None:
        return self.plan.into_batches

    @property
    def scaling_step(self) -> bool:
        return self.plan.scaling_step

    def explain(self) -> str:
        return self.plan.explain()


@dataclass(frozen=True)
class SampledPlan:
    """A plan run on a sample of the rows at the scaling step: ``df.limit(sample_rows)``, or
    ``df.sample(fraction)`` (seeded) when ``fraction`` is set, then the plan's scaling step.

    ``plan.partitions`` is already the sample's (:func:`daftscale.tune.sample_partitions`);
    ``full_partitions`` is the full-data plan's. ``plan.inputs["rows"]`` is the sample's rows, so a run
    report calibrates the simulator with what actually ran.
    """

    plan: ScalingPlan
    sample_rows: int
    full_partitions: int | None = None
    fraction: float | None = None
    # A sample by files instead of rows: the pipeline's ``daft.read_parquet(read_paths)`` reads ``read_files``
    # (some of its files, daftscale.execution.spread_files) and the step takes every row reaching it, about
    # ``sample_rows`` (:func:`daftscale.pipeline.reading_files`).
    read_paths: tuple[str, ...] | None = None
    read_files: tuple[str, ...] = ()
    # A calibration cost probe's: a UDF call that runs out of memory is run again in halves, not the query
    # failed (daftscale.udf.recorded_call), so the one run still measures costs and memory per row.
    halve_out_of_memory: bool = False

    @classmethod
    def of(cls, plan: ScalingPlan, sample_rows: int, *, fraction: float | None = None) -> SampledPlan:
        """``plan`` on ``sample_rows`` of its ``inputs["rows"]``, its partitions scaled to the sample."""
        rows = int(plan.inputs.get("rows") or sample_rows)
        sample_rows = min(sample_rows, rows)
        changes: dict[str, Any] = {"inputs": {**plan.inputs, "rows": sample_rows}}
        if plan.partitions is not None:
            changes["partitions"] = sample_partitions(plan.partitions, rows, sample_rows, plan.concurrency)
        # A head sample of an into_partitions plan keeps it: ScalingPlan.apply repartitions after the limit
        # (Daft 0.7.26's Ray runner never finishes into_partitions after one), as it does for a user's limit.
        return cls(replace(plan, **changes), sample_rows, full_partitions=plan.partitions, fraction=fraction)

    def take(self, df: daft.DataFrame) -> daft.DataFrame:
        """The sample of ``df`` (the DataFrame reaching the scaling step)."""
        if self.fraction is not None:
            return df.sample(fraction=min(1.0, self.fraction), seed=0)
        return df.limit(self.sample_rows)

    def handle(self, head: daft.DataFrame | None = None) -> PlanHandle:
        """What ``build(plan)`` receives for a run on this sample; ``head``, when given, is the sample
        already in memory (:func:`parquet_head`), taken instead of ``df.limit``."""
        if head is not None:
            return PlanHandle(self.plan, before_step=lambda _df: head)
        if self.read_paths is not None:
            return PlanHandle(self.plan)
        return PlanHandle(self.plan, before_step=self.take)


def parquet_head(scaling_input: daft.DataFrame, paths: Sequence[str] | None, rows: int) -> daft.DataFrame | None:
    """The first ``rows`` rows of the Parquet files ``paths``, read on the driver into memory: the head
    sample of a scaling input that is that read and nothing else, for a sampled run.

    Why not ``df.limit(rows)``: Daft's Ray runner runs a limit with a counter actor of its own
    (``daft.execution.ray_distributed_limit``), and each Ray actor costs a worker process. Measured on the
    4x4 local cluster, a 2-actor sample run's first batch came 1.1-1.4 s later behind a limit of a
    Parquet read than behind the same rows already in memory (1.3-1.5 s; 5.0 s later in a cold first
    query), and the head took 0.02-0.06 s to read.

    ``None`` (take the limit) unless the scaling input is a bare read whose columns the files hold (not hive
    partitions or a file path column), and unless the rows read cast to its schema exactly.
    """
    import daft

    from daftscale.profile import list_parquet_files
    from daftscale.scaling_plan import plan_operators

    if not paths or rows < 1:
        return None
    try:
        if plan_operators(scaling_input) != ["Source"]:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = scaling_input.schema()
        names = schema.column_names()
        filesystem, files = list_parquet_files(list(paths))
        batches: list[pa.RecordBatch] = []
        taken = 0
        for path in files:
            with filesystem.open_input_file(path) as handle:
                parquet = pq.ParquetFile(handle)
                if not set(names) <= set(parquet.schema_arrow.names):
                    return None
                for batch in parquet.iter_batches(batch_size=min(rows, 65_536), columns=names):
                    batches.append(batch.slice(0, rows - taken))
                    taken += batches[-1].num_rows
                    if taken >= rows:
                        break
            if taken >= rows:
                break
        if not batches:
            return None
        # Daft's read may type a column differently from pyarrow's (its own types, timestamp units): cast
        # to the scaling input's schema in Arrow, and take the rows only if Daft then sees the same schema.
        table = pa.Table.from_batches(batches).cast(schema.to_pyarrow_schema())
        head = daft.from_arrow(table)
        return head if head.schema() == schema else None
    except Exception:  # a faster sample is an optimisation: anything unexpected takes the limit instead
        return None


__all__ = ["PlanHandle", "SampledPlan", "parquet_head"]
