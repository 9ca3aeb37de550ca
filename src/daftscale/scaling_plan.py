"""The plan as data: :class:`ScalingPlan` (every number for one pipeline on one cluster, each with its
reason), what it warns of (:class:`PlanWarning`) and what one UDF actor asks for (:class:`UdfResources`).

A plan is frozen data with its readings: JSON in and out (``to_json`` / ``from_json``, stable keys),
``explain()``, ``to_code()``, and ``apply(df)`` / ``udf(Model)`` for a user who applies it by hand. The
planner that makes one is :func:`daftscale.plan.plan`; what a pipeline's ``build(plan)`` receives is a
:class:`daftscale.plan_handle.PlanHandle` over it.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from daftscale.config import parse_memory, require_positive_number
from daftscale.errors import PlanError

if TYPE_CHECKING:
    import daft

Strategy = Literal["shuffle", "streaming"]

PLAN_FORMAT_VERSION = 1

# The keys `daftscale plan --format json` promises (a stable format); more may follow them.
PLAN_JSON_KEYS = (
    "strategy",
    "reason",
    "inputs",
    "actors_per_node",
    "min_rows_per_partition",
    "max_partitions",
    "partitions",
    "batch_size",
    "concurrency",
    "partition_bytes_target",
    "warnings",
    "steps",
)
PLAN_INPUT_KEYS = ("rows", "nodes", "total_concurrency", "batch_size", "bytes_per_row")


# ---------------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class PlanWarning:
    """A problem with the inputs or the plan: a stable ``code`` and a message that ends with the fix."""

    code: str
    message: str


@dataclass(frozen=True)
class UdfResources:
    """What one UDF actor asks for. ``memory`` is its budget for a batch (GPU memory for GPU UDFs)."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory: int | None = None

    @classmethod
    def of(
        cls, *, cpus: float | None = None, gpus: float | None = None, memory: str | int | None = None
    ) -> UdfResources:
        return cls(
            cpus=1.0 if cpus is None else require_positive_number(cpus, "udf_cpus", allow_zero=True),
            gpus=0.0 if gpus is None else require_positive_number(gpus, "udf_gpus", allow_zero=True),
            memory=None if memory is None else parse_memory(memory, name="udf_memory"),
        )


@dataclass(frozen=True)
class ScalingPlan:
    """The numbers for one pipeline on one cluster, each with its reason.

    JSON (``to_json``) has stable keys (``PLAN_JSON_KEYS``). Use :meth:`apply` on a DataFrame,
    :meth:`explain` to read why, :meth:`to_code` for the Daft lines to paste.
    """

    strategy: Strategy
    reason: str
    inputs: dict[str, Any]
    actors_per_node: int
    min_rows_per_partition: int
    max_partitions: int
    partitions: int | None
    partition_op: str | None
    partition_keys: tuple[str, ...]
    into_batches: int | None
    batch_size: int
    concurrency: int
    udf_cpus: float
    udf_gpus: float
    partition_bytes_target: int | None
    execution_config: dict[str, Any]
    warnings: tuple[PlanWarning, ...]
    steps: tuple[str, ...]
    levers: dict[str, str]
    cluster: dict[str, Any]
    udf_profile: dict[str, Any] | None = None
    predicted: dict[str, Any] | None = None
    version: int = PLAN_FORMAT_VERSION
    # True when into_batches is there to merge fragments before the UDF (calibration measured them): it is
    # then applied on the native runner too, where the shuffle plan's partition step is a no-op.
    coalesce: bool = False
    # What calibration on the real runner measured (daftscale.calibrate.Calibration.to_dict), or None.
    calibration: dict[str, Any] | None = None
    # The choice between this plan and no scaling step: {"scaling_step": bool, "why": str, ...}, or None
    # (no choice was measured: the formula plan as it is).
    decision: dict[str, Any] | None = None

    # -- serialisation -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["partition_keys"] = list(self.partition_keys)
        data["warnings"] = [asdict(w) for w in self.warnings]
        data["steps"] = list(self.steps)
        # Keys added with calibration appear only when set, so an uncalibrated plan's JSON is as before.
        for key, default in (("coalesce", False), ("calibration", None), ("decision", None)):
            if data.get(key) == default:
                data.pop(key, None)
        return data

    @property
    def scaling_step(self) -> bool:
        """False when calibration measured Daft's default (no scaling step) as no slower: apply leaves df alone."""
        return not (self.decision is not None and self.decision.get("scaling_step") is False)

    @property
    def udf_batch_size(self) -> int | None:
        """Rows per UDF call the plan sets on the UDF: ``batch_size``, or None to leave Daft's own.

        None when the decision says so and the pipeline declared no batch size: for "no scaling step" (Daft's
        default is then measured and run as Daft runs it, each morsel handed to the UDF whole, a Parquet row
        group, thousands of rows, not the planner's B), and for the split of uneven files
        (:mod:`daftscale.calibrate_split`), whose tasks go to the UDF as Daft's default would hand them.
        """
        # Only None is read from the decision: any other batch it records equals ``batch_size``, and reading
        # ``batch_size`` lets a user who edits a saved plan's batch size have it run.
        if self.decision is not None and "udf_batch_size" in self.decision and self.decision["udf_batch_size"] is None:
            return None
        return self.batch_size

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScalingPlan:
        """Rebuild a plan from :meth:`to_dict` output; raises :class:`PlanError` if it is not a plan."""
        if not isinstance(data, dict) or "strategy" not in data or "batch_size" not in data:
            raise PlanError("not a daftscale plan (no 'strategy' or 'batch_size'): make one with 'daftscale plan'")
        if data.get("version", PLAN_FORMAT_VERSION) != PLAN_FORMAT_VERSION:
            raise PlanError(
                f"plan format version {data.get('version')} is not {PLAN_FORMAT_VERSION}: "
                "make the plan again with this daftscale"
            )
        try:
            fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            fields["warnings"] = tuple(PlanWarning(**w) for w in data.get("warnings", ()))
            fields["steps"] = tuple(data.get("steps", ()))
            fields["partition_keys"] = tuple(data.get("partition_keys", ()))
            plan = cls(**fields)
        except (TypeError, KeyError) as exc:
            raise PlanError(
                f"plan is missing or has malformed fields ({exc}): make it again with 'daftscale plan'"
            ) from exc
        if plan.strategy not in ("shuffle", "streaming"):
            raise PlanError(f"plan strategy {plan.strategy!r} is unknown: use 'shuffle' or 'streaming'")
        return plan

    @classmethod
    def from_json(cls, text: str) -> ScalingPlan:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PlanError(f"plan file is not JSON ({exc.msg} at line {exc.lineno}): pass a plan.json") from exc
        return cls.from_dict(data)

    # -- reading -----------------------------------------------------------------------------------

    def explain(self) -> str:
        """The steps with the user's own numbers, then the warnings, as in Daft's scaling guide's worked example."""
        lines = []
        if self.decision is not None:
            verdict = "the scaling step below" if self.scaling_step else "no scaling step (plan.apply leaves df alone)"
            lines += [f"Decision: {verdict} — {self.decision.get('why', '')}", ""]
        lines += [f"Strategy: {self.strategy} — {self.reason}", ""]
        lines += [f"{i}. {step}" for i, step in enumerate(self.steps, 1)]
        if self.calibration is not None:
            lines += ["", "Measured on a sample (calibration):"]
            lines += [f"  {line}" for line in self.calibration.get("lines", ())]
        lines += ["", "Levers:"]
        lines += [f"  {name}: {text}" for name, text in self.levers.items()]
        if self.warnings:
            lines += ["", "Warnings:"]
            lines += [f"  [{w.code}] {w.message}" for w in self.warnings]
        return "\n".join(lines)

    def to_code(self) -> str:
        """The Daft lines a user would paste to apply this plan by hand."""
        lines = ["import daft", ""]
        if self.execution_config:
            args = ", ".join(f"{k}={v!r}" for k, v in self.execution_config.items())
            lines.append(f"daft.set_execution_config({args})")
        lines.append('df = daft.read_parquet("...")  # the light or heavy read')
        if not self.scaling_step:
            lines.append("# no scaling step: measured no faster than Daft's default here")
        elif self.strategy == "shuffle":
            keys = "".join(f', "{k}"' for k in self.partition_keys)
            lines.append(f"df = df.{self.partition_op}({self.partitions}{keys})")
            if self.into_batches:
                why = (
                    "merges fragments into full batches" if self.coalesce else "on Ray: smaller tasks, placed anywhere"
                )
                lines.append(f"df = df.into_batches({self.into_batches})  # {why}")
        else:
            lines.append(f"df = df.into_batches({self.into_batches})")
        resources = f"max_concurrency={self.concurrency}"
        if self.udf_gpus:
            resources += f", gpus={self.udf_gpus:g}"
        elif self.udf_cpus != 1:
            resources += f", cpus={self.udf_cpus:g}"
        lines += [
            "",
            f"@daft.cls({resources})",
            "class Model:",
            "    @daft.method.batch(return_dtype=...)  # Daft's own batch"
            if self.udf_batch_size is None
            else f"    @daft.method.batch(return_dtype=..., batch_size={self.udf_batch_size})",
            "    def __call__(self, column): ...",
            "",
            'df = df.with_column("out", Model()(df["input"]))',
        ]
        return "\n".join(lines)

    def warning_codes(self) -> list[str]:
        return [w.code for w in self.warnings]

    # -- applying ----------------------------------------------------------------------------------

    def apply(self, df: daft.DataFrame) -> daft.DataFrame:
        """Insert the scaling step into a real Daft DataFrame.

        Shuffle plans add ``repartition(partitions[, *keys])`` (or ``into_partitions``); streaming plans
        add ``into_batches(into_batches)``. A shuffle plan may follow its partition step with
        ``into_batches`` to cut tasks finer on Ray. On Daft's native runner partition operations are
        no-ops (Daft says so), so shuffle plans leave the DataFrame as it is there and only streaming
        plans apply ``into_batches``.

        Examples:
            >>> import daft
            >>> from daftscale import plan, profile_numbers, ClusterSpec
            >>> p = plan(profile_numbers(1000, 2_000_000), ClusterSpec(nodes=1, cpus_per_node=2),
            ...          batch_size=16, concurrency=2)
            >>> p.into_batches   # rows per task: B × A = 16 × 2 (plan.udf keeps each call at 16 rows)
            32
            >>> df = p.apply(daft.from_pydict({"x": list(range(1000))}))
            >>> sizes = [len(t) for t in df.to_arrow_iter()]
            >>> sum(sizes), len(sizes) >= 1000 // 32   # every row, in tasks of about 32 rows
            (1000, True)

        A plan whose partition step is ``into_partitions`` repartitions instead when a ``limit`` comes before
        it: Daft 0.7.26's Ray runner never finishes ``into_partitions`` after a ``limit``.

        Daft's ``into_batches`` is best effort: a task may carry up to a batch's remainder more than asked,
        which is why ``plan.udf`` bounds each UDF call at ``batch_size`` itself.
        """
        from daft.runners import get_or_infer_runner_type

        if not self.scaling_step:
            return df
        if self.strategy == "streaming":
            return df.into_batches(self.into_batches or self.batch_size)
        if get_or_infer_runner_type() == "native":
            # Partition operations are no-ops there, but merging fragments into full batches is not.
            return df.into_batches(self.into_batches) if self.coalesce and self.into_batches else df
        assert self.partitions is not None
        if self.partition_keys:
            df = df.repartition(self.partitions, *self.partition_keys)
        elif self.partition_op == "into_partitions" and not _has_limit(df):
            # (After a limit, Daft 0.7.26's Ray runner never finishes into_partitions: repartition below.)
            df = df.into_partitions(self.partitions)
        else:
            with warnings.catch_warnings():
                # Daft warns that a keyless repartition is a random shuffle; the plan chose it on purpose.
                warnings.filterwarnings("ignore", message="No columns specified for repartition")
                df = df.repartition(self.partitions)
        return df.into_batches(self.into_batches) if self.into_batches else df

    def udf(self, cls: type, **options: Any) -> Any:
        """Wrap a model class as an instrumented Daft actor UDF with this plan's concurrency and batch size.

        See :func:`daftscale.udf.actor_udf` for the options.
        """
        from daftscale.udf import actor_udf

        return actor_udf(cls, self, **options)

    def with_prediction(self, predicted: dict[str, Any]) -> ScalingPlan:
        return replace(self, predicted=predicted)


def describe_step(plan: ScalingPlan) -> str:
    """The plan's scaling step in a few words, as the DataFrame calls it makes.

    >>> from daftscale import ClusterSpec, plan, profile_numbers
    >>> describe_step(plan(profile_numbers(100_000, 100), ClusterSpec(nodes=2, cpus_per_node=4), concurrency=4))
    'repartition(196)'
    """
    if not plan.scaling_step:
        return "no scaling step"
    if plan.strategy == "shuffle":
        text = f"{plan.partition_op}({plan.partitions})"
        return text + (f".into_batches({plan.into_batches})" if plan.into_batches else "")
    return f"into_batches({plan.into_batches})"


def _has_limit(df: daft.DataFrame) -> bool:
    """Whether a ``limit`` comes before this point of ``df`` (read from Daft's logical plan; False if unreadable).

    >>> import daft
    >>> _has_limit(daft.from_pydict({"x": [1, 2]}).limit(1)), _has_limit(daft.from_pydict({"x": [1, 2]}))
    (True, False)
    """
    try:
        return "Limit" in plan_operators(df)
    except Exception:  # a Daft without this private API: into_partitions as planned
        return False


def plan_operators(df: daft.DataFrame) -> list[str]:
    """The operator names of ``df``'s logical plan, outermost first, from Daft's plan text.

    ``LogicalPlanBuilder.pretty_print`` is not a public API: this raises when it cannot be read, and each
    caller decides what that means for it.

    >>> import daft
    >>> plan_operators(daft.from_pydict({"x": [1, 2]}).limit(1))
    ['Limit', 'Source']
    """
    return re.findall(r"\*\s+([A-Za-z]+)", df._builder.pretty_print(simple=True))


# Daft's plan text names a UDF call as "<name>-<id>-<n>(" (@daft.cls methods, @daft.func, daftscale's actor UDFs)
# or "py_udf(" (the legacy @daft.udf).
_UDF_CALL = re.compile(r"-\d+-\d+\(|\bpy_udf\(")

# Daft wraps a long line of its plan text onto the next, after a "|" and spaces, even inside a UDF's name:
# "__main__.Embed.__call__-314621-" then "|     0(col(text)) as n".
_WRAPPED = re.compile(r"\n[|\s]*")


def _names_udf_call(text: str) -> bool:
    """Whether this plan text calls a UDF, wrapped lines joined."""
    return bool(_UDF_CALL.search(_WRAPPED.sub("", text)))


def calls_udf(df: daft.DataFrame) -> bool:
    """Whether ``df``'s plan calls a UDF (reads the private plan text; True when it cannot be read).

    >>> import daft
    >>> @daft.func
    ... def plus_one(x: int) -> int:
    ...     return x + 1
    >>> df = daft.from_pydict({"x": [1, 2]})
    >>> calls_udf(df.with_column("y", df["x"] + 1)), calls_udf(df.with_column("y", plus_one(df["x"])))
    (False, True)
    """
    try:
        text = df._builder.pretty_print(simple=False)
    except Exception:
        return True
    return _names_udf_call(text) or "udf" in text.lower()


def operators_above_first_udf(df: daft.DataFrame) -> list[str] | None:
    """The operator names printed before the first UDF call in ``df``'s plan text, outermost first: the operators
    applied to that call's results, and any join branch printed before it (which does not feed it either). None
    when the plan calls no UDF Daft's plan text names (or the full text does not line up with the simple one).

    Like :func:`plan_operators`, this reads the private plan text and raises when it cannot.

    >>> import daft
    >>> @daft.func
    ... def plus_one(x: int) -> int:
    ...     return x + 1
    >>> df = daft.from_pydict({"k": [1, 1, 2], "x": [1, 2, 3]})
    >>> operators_above_first_udf(df.with_column("y", plus_one(df["x"])).groupby("k").agg(daft.col("y").sum()))
    ['Aggregate']
    >>> operators_above_first_udf(df.groupby("k").agg(daft.col("x").sum())) is None
    True
    """
    names = plan_operators(df)
    # Each operator's block in the full text starts at its "* Name" line, in the simple text's order.
    blocks = re.split(r"^[\s|]*\*\s+", df._builder.pretty_print(simple=False), flags=re.M)[1:]
    if len(blocks) != len(names):
        return None
    first = next((i for i, block in enumerate(blocks) if _names_udf_call(block)), None)
    return None if first is None else names[:first]


__all__ = [
    "PLAN_FORMAT_VERSION",
    "PLAN_INPUT_KEYS",
    "PLAN_JSON_KEYS",
    "PlanWarning",
    "ScalingPlan",
    "Strategy",
    "UdfResources",
    "calls_udf",
    "describe_step",
    "operators_above_first_udf",
    "plan_operators",
]
