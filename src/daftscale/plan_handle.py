"""What a pipeline's ``build(plan)`` receives (:class:`PlanHandle`), and the sampled plans that calibration
and the tuner run (:class:`SampledPlan`).

A :class:`~daftscale.plan.ScalingPlan` is data: the numbers and their reasons. A handle is what a build
function uses: the plan's ``apply`` at the scaling step, ``udf`` for the model, and the numbers a build
may size other things by, each named here. A handle changes what happens at the scaling step without a
different kind of plan:

- the probe's handle (``record``) records the DataFrame reaching ``apply`` and returns it unchanged, so
  the provisional plan's numbers never shape it and nothing executes;
- a sampled run's handle (``before_step``) takes the sample first, ``df.limit(n)`` or
  ``df.sample(fraction)`` after a join, then applies the plan's scaling step.
"""

from __future__ import annotations

from collections.abc import Callable
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

    def handle(self) -> PlanHandle:
        """What ``build(plan)`` receives for a run on this sample."""
        return PlanHandle(self.plan, before_step=self.take)


__all__ = ["PlanHandle", "SampledPlan"]
