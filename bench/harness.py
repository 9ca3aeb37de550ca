"""Run every workload under every configuration in one Ray cluster, measure each run the same way.

Every figure comes from the run itself, through daftscale's run machinery: UDF calls are timed inside
the actors and sent to a :class:`~daftscale.udf.RayCollector`, resident memory is sampled per node by
:class:`~daftscale.run.NodeMemorySampler`, utilisation is :func:`daftscale.report.actor_utilization`
of those calls, rows out are counted from the partitions that come back. The ``daftscale`` configuration
goes through :func:`daftscale.run.run` itself (``plan="auto"``), as a user would run it.

``wall_s`` is the query's execution: from the moment the DataFrame (or Dataset) starts executing until
the last partition is back (actor pool start included). Work before it (daftscale's probe, profiling
and planning, and its UDF profiling) is reported beside it as ``prep_s``, never hidden.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench import raydata
from bench.predict import judge
from bench.workloads import (
    Costs,
    SleepModel,
    Workload,
    build_daft,
    make_data,
    model_args,
    profile_read,
    sample_values,
)

CONFIGS = ("daft-default", "seed-recipe", "daft-dynamic-batching", "ray-data", "daftscale", "daftscale-tuned")

# daftscale-tuned: `daftscale tune` on this share of the workload's rows, within this many seconds, then a
# full run of the winning plan. The tuning time is reported beside the run (`tune_s`), not in `wall_s`.
# --quick halves the budget: four searches of 120 s would take --quick past its 20 minutes.
TUNE_SAMPLE = 0.25
TUNE_BUDGET_S = 120.0
QUICK_TUNE_BUDGET_S = 60.0

# The seed's fixed numbers: recipe 1 (light data) repartition(100), recipe 2 (heavy data) into_batches(64),
# and "Batch Size 64" for the UDF in both.
SEED_PARTITIONS = 100
SEED_BATCH = 64


@dataclass
class _Sizing:
    """What :func:`daftscale.udf.actor_udf` reads from a plan, for the configurations that have none.

    ``batch_size=None`` leaves Daft's own default (``@daft.method.batch`` without ``batch_size``).
    """

    batch_size: int | None
    concurrency: int
    udf_cpus: float = 1.0
    udf_gpus: float = 0.0


def _classify(exc: BaseException) -> tuple[str, str]:
    """``(status, one-line message)``; ``oom`` when a MemoryError is anywhere in the chain or the text."""
    text = f"{type(exc).__name__}: {exc}"
    chain: BaseException | None = exc
    oom = False
    while chain is not None:
        if isinstance(chain, MemoryError):
            oom = True
        chain = chain.__cause__ or chain.__context__
    if "MemoryError" in text or "out of memory" in text:
        oom = True
    line = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", text).split())
    # Ray wraps the UDF's error in its own traceback text: keep the innermost "Type: message".
    inner = max(line.rfind("MemoryError:"), line.rfind("UserCodeException:"))
    if oom and line.rfind("MemoryError:") >= 0:
        line = line[line.rfind("MemoryError:") :]
    elif inner > 0:
        line = line[inner:]
    return ("oom" if oom else "error"), line[:300]


def _count_partitions(df: Any) -> tuple[int, int]:
    import ray

    rows = parts = 0
    for part in df.iter_partitions():
        if not hasattr(part, "__len__"):
            part = ray.get(part)
        rows += len(part)
        parts += 1
    return rows, parts


def _measure(execute: Callable[[], tuple[int, int]], concurrency: int, build: Callable[[], Any]) -> dict[str, Any]:
    """Build under a collector, execute with memory sampled, return the measured figures."""
    from daftscale.report import actor_utilization
    from daftscale.run import NodeMemorySampler
    from daftscale.udf import RayCollector, recording

    collector = RayCollector()
    sampler = None
    result: dict[str, Any] = {"status": "ok", "error": None, "rows_out": 0, "partitions": 0}
    try:
        with recording(collector.sink):
            target = build(collector.sink)
        sampler = NodeMemorySampler("ray")
        start = time.time()
        try:
            result["rows_out"], result["partitions"] = execute(target)
        except Exception as exc:
            result["status"], result["error"] = _classify(exc)
        end = time.time()
        peaks = sampler.stop()
        sampler = None
        calls, _ = collector.snapshot()
    finally:
        if sampler is not None:
            sampler.stop()
        collector.close()
    relative = [{**c, "start": c["start"] - start, "end": c["end"] - start} for c in calls]
    utilization, span = actor_utilization(relative, concurrency)
    result.update(
        wall_s=round(end - start, 3),
        peak_memory_bytes=max(peaks.values(), default=0),
        actor_utilization=round(utilization, 4),
        udf_calls=len(calls),
        udf_rows=sum(int(c["rows"]) for c in calls),
        mean_batch_rows=round(sum(int(c["rows"]) for c in calls) / len(calls), 1) if calls else 0,
        actors_used=len({c["actor"] for c in calls}),
        stage_span_s=round(span, 3),
        first_call_s=round(min((c["start"] for c in relative), default=0.0), 3),
    )
    return result


class Bench:
    """One benchmark session on a running Ray cluster: data, UDF profiles, and one run at a time."""

    def __init__(
        self,
        out_dir: str,
        *,
        concurrency: int,
        task_slots: int,
        log: Callable[[str], None] = print,
        tune_budget_s: float = TUNE_BUDGET_S,
    ):
        self.out_dir = out_dir
        self.tune_budget_s = tune_budget_s
        self.concurrency = concurrency
        self.task_slots = task_slots
        self.log = log
        self._files: dict[str, list[str]] = {}
        self._profiles: dict[str, tuple[Any, float | None]] = {}
        self.notes: list[str] = []
        # Tuning results are cached per bench run only: a cache left by an earlier run may come from
        # another planner.
        shutil.rmtree(os.path.join(out_dir, "tune-cache"), ignore_errors=True)

    def files(self, workload: Workload) -> list[str]:
        if workload.name not in self._files:
            self._files[workload.name] = make_data(workload, os.path.join(self.out_dir, "data", workload.name))
        return self._files[workload.name]

    def warm_up(self) -> None:
        """One tiny Daft query with an actor UDF and one tiny Ray Data pipeline, not measured: the first
        query on a fresh cluster starts Daft's per-node workers and Ray's worker processes, a one-time
        cost that would otherwise land on whichever configuration happens to run first."""
        tiny, files = self._tiny_data()
        _count_partitions(self._tiny_query())
        raydata.quiet()
        note = raydata.path_column_check(os.path.join(self.out_dir, "data", "path-check"))
        if note:
            self.notes.append(note)
        ds = raydata.build_raydata(tiny, files, self.concurrency, None)
        sum(b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))

    def fixed_start(self, repeats: int = 3) -> list[float]:
        """Wall times of a query that does next to nothing with this actor pool: 64 rows, no UDF cost,
        ``into_batches(8)`` so every actor gets a batch. What any configuration pays before its first
        rows come through (query start, ``concurrency`` actor processes importing Python, Ray and Daft
        on this machine's cores, the first batches); the bench measures it after the warm-up."""
        walls = []
        for _ in range(repeats):
            self.settle()
            query = self._tiny_query()
            start = time.time()
            _count_partitions(query)
            walls.append(round(time.time() - start, 3))
        return walls

    def _tiny_data(self) -> tuple[Workload, list[str]]:
        tiny = Workload(name="warm-up", title="warm-up", kind="light", file_rows=(64,), model=Costs(0.0, 0.0))
        return tiny, make_data(tiny, os.path.join(self.out_dir, "data", "warm-up"))

    def _tiny_query(self) -> Any:
        """64 rows in ``into_batches(8)`` tasks through a zero-cost model on the full actor pool."""
        import daft

        from daftscale.udf import actor_udf

        tiny, files = self._tiny_data()
        model = actor_udf(
            SleepModel, _Sizing(8, self.concurrency), return_dtype=daft.DataType.int64(), init_args=model_args(tiny)
        )
        return build_daft(tiny, files, lambda df: df.into_batches(8), model)

    def settle(self, timeout_s: float = 20.0) -> float:
        """Wait until the previous run's actors have given their CPUs back (Daft and Ray Data tear their
        pools down asynchronously), so a run does not start while the last one is still shutting down."""
        import ray

        start = time.time()
        total = ray.cluster_resources().get("CPU", 0)
        while time.time() - start < timeout_s and ray.available_resources().get("CPU", 0) < total:
            time.sleep(0.25)
        return time.time() - start

    # -- one run ---------------------------------------------------------------------------------------

    def run(self, workload: Workload, config: str, repeat: int) -> dict[str, Any]:
        files = self.files(workload)
        self.settle()
        started = time.time()
        try:
            if config == "ray-data":
                measured = self._ray_data(workload, files)
            elif config in ("daftscale", "daftscale-tuned"):
                measured = self._daftscale(workload, files, tuned=config == "daftscale-tuned")
            else:
                measured = self._daft_baseline(workload, files, config)
        except Exception as exc:  # a configuration that cannot even start is a result, not a crash
            status, error = _classify(exc)
            self.log(traceback.format_exc(limit=3))
            measured = {"status": status, "error": error, "wall_s": round(time.time() - started, 3), "rows_out": 0}
        row = {
            "workload": workload.name,
            "config": config,
            "repeat": repeat,
            "rows_in": workload.rows,
            "ideal_s": round(workload.ideal_s(self.concurrency, self.task_slots), 3),
            "concurrency": self.concurrency,
            "prep_s": 0.0,
            "peak_memory_bytes": 0,
            "actor_utilization": 0.0,
            **measured,
        }
        row["lost_rows"] = row["rows_in"] - row["rows_out"] if row["status"] == "ok" else None
        return row

    def _daft_baseline(self, workload: Workload, files: list[str], config: str) -> dict[str, Any]:
        import daft

        from daftscale.udf import actor_udf

        if config == "daft-default":
            sizing, scale, knobs = _Sizing(None, self.concurrency), (lambda df: df), {}
        elif config == "daft-dynamic-batching":
            sizing, scale, knobs = _Sizing(None, self.concurrency), (lambda df: df), {"enable_dynamic_batching": True}
        elif config == "seed-recipe":
            sizing, knobs = _Sizing(SEED_BATCH, self.concurrency), {}
            if workload.kind == "light":
                scale = lambda df: df.repartition(SEED_PARTITIONS)  # noqa: E731
            else:
                scale = lambda df: df.into_batches(SEED_BATCH)  # noqa: E731
        else:
            raise ValueError(f"unknown configuration {config!r}: pick from {', '.join(CONFIGS)}")

        def build(_sink: Any) -> Any:
            model = actor_udf(
                SleepModel, sizing, return_dtype=daft.DataType.int64(), init_args=model_args(workload), name="Model"
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No columns specified for repartition")
                return build_daft(workload, files, scale, model)

        def execute(df: Any) -> tuple[int, int]:
            with daft.execution_config_ctx(**knobs):
                return _count_partitions(df)

        measured = _measure(execute, self.concurrency, build)
        measured["batch_size"] = sizing.batch_size
        measured["scaling_step"] = {
            "daft-default": "none",
            "daft-dynamic-batching": "none (enable_dynamic_batching=True)",
            "seed-recipe": f"repartition({SEED_PARTITIONS})"
            if workload.kind == "light"
            else f"into_batches({SEED_BATCH})",
        }[config]
        return measured

    def _ray_data(self, workload: Workload, files: list[str]) -> dict[str, Any]:
        raydata.quiet()

        def build(sink: Any) -> Any:
            return raydata.build_raydata(workload, files, self.concurrency, sink)

        def execute(ds: Any) -> tuple[int, int]:
            rows = batches = 0
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows += batch.num_rows
                batches += 1
            return rows, batches

        measured = _measure(execute, self.concurrency, build)
        measured["batch_size"] = "Ray Data default"
        measured["scaling_step"] = "Ray Data defaults"
        return measured

    def _daftscale(self, workload: Workload, files: list[str], *, tuned: bool = False) -> dict[str, Any]:
        from daftscale.errors import DaftscaleError
        from daftscale.run import run

        prep_start = time.time()
        udf_profile, read_profile = self.profiles(workload)
        profile_s = time.time() - prep_start
        kwargs = self.planner_kwargs(workload, udf_profile)
        pipe = daftscale_pipeline(workload, files)
        tuning: dict[str, Any] = {}
        try:
            if tuned:
                from daftscale.tune import tune

                # Cached per pipeline, data and cluster: the first repeat pays for the search, later
                # repeats reuse its plan (as a user re-running the same job would).
                result = tune(
                    pipe,
                    runner="ray",
                    sample=TUNE_SAMPLE,
                    budget_s=self.tune_budget_s,
                    cache_dir=os.path.join(self.out_dir, "tune-cache"),
                    progress=False,
                    **kwargs,
                )
                tuning = {
                    "tune_s": round(result.elapsed_s, 3),
                    "tune_cached": result.cached,
                    "tune_speedup": result.speedup,
                }
                report = run(pipe, runner="ray", plan=result.best, progress=False)
            else:
                report = run(pipe, runner="ray", plan="auto", progress=False, **kwargs)
        except DaftscaleError as exc:
            status, error = _classify(exc)
            return {"status": status, "error": error, "rows_out": 0, "wall_s": round(time.time() - prep_start, 3)}
        plan = report.plan
        if plan["strategy"] == "shuffle":
            step = f"{plan['partition_op']}({plan['partitions']})"
            if plan.get("into_batches"):
                step += f" + into_batches({plan['into_batches']})"
        else:
            step = f"into_batches({plan['into_batches']})"
        return {
            "status": "ok",
            "error": None,
            "wall_s": report.wall_s,
            # For daftscale-tuned, prep includes the tuning search (tune_s, 0 when its cache answered).
            "prep_s": round(report.plan_s + profile_s + tuning.get("tune_s", 0.0), 3),
            "rows_in_measured": report.rows_in,
            "rows_out": report.rows_out,
            "partitions": report.partitions,
            "peak_memory_bytes": report.peak_memory_bytes,
            "actor_utilization": report.actor_utilization,
            "udf_calls": report.batches,
            "udf_rows": sum(c["rows"] for c in report.udf_calls),
            "mean_batch_rows": round(sum(c["rows"] for c in report.udf_calls) / max(report.batches, 1), 1),
            "actors_used": report.actors_used,
            "stage_span_s": report.stage_span_s,
            "first_call_s": round(min((c["start"] for c in report.udf_calls), default=0.0), 3),
            "batch_size": plan["batch_size"],
            "scaling_step": step,
            "plan_steps": plan["steps"],
            # The per-row read's profile (W1), for the simulator's predictions: a run report times only UDF calls.
            "read_seconds_per_row": read_profile,
            "plan_warnings": [w["code"] for w in plan["warnings"]],
            # The whole run report, for calibrating the simulator (run_bench takes it out of the row).
            "_report": report.to_dict(),
            **tuning,
        }

    def planner_kwargs(self, workload: Workload, udf_profile: Any) -> dict[str, Any]:
        """What the ``daftscale`` configurations tell the planner: the actor pool, the UDF's declared memory
        (W4) and, when given, the UDF profile."""
        from daftscale.plan import UdfResources

        kwargs: dict[str, Any] = {"concurrency": self.concurrency}
        if workload.udf_memory:
            kwargs["udf"] = UdfResources.of(memory=workload.udf_memory)
        if udf_profile is not None:
            kwargs["udf_profile"] = udf_profile
        return kwargs

    def profiles(self, workload: Workload) -> tuple[Any, float | None]:
        """The model UDF profiled on a small sample (None if unavailable) and the read step's seconds per
        row (None without one), as a daftscale user would measure them.

        Once per workload and bench run: a user profiles a model once and keeps the numbers, and a
        re-measured profile (never equal to the last) would give the tuner's cache a new key every repeat.
        """
        if workload.name not in self._profiles:
            self._profiles[workload.name] = (self._profile_udf(workload), profile_read(workload))
        return self._profiles[workload.name]

    def _profile_udf(self, workload: Workload) -> Any:
        try:
            from daftscale.udfprofile import profile_udf
        except ImportError:
            return None
        return profile_udf(
            SleepModel,
            sample_values(workload, max(workload.profile_batch_sizes)),
            init_args=model_args(workload),
            batch_sizes=workload.profile_batch_sizes,
            repeats=3,
        )


# ---------------------------------------------------------------------------------------------------
# Schedules and summaries


def schedule(workloads: Iterable[str], configs: list[str], repeats: int) -> list[tuple[str, str, int]]:
    """Runs in order: per workload, each repeat runs every config, the order rotated by one each repeat,
    so no config always runs first after a workload change, or always in the same slot.

    >>> schedule(["W1"], ["a", "b", "c"], 2)
    [('W1', 'a', 0), ('W1', 'b', 0), ('W1', 'c', 0), ('W1', 'b', 1), ('W1', 'c', 1), ('W1', 'a', 1)]
    """
    order: list[tuple[str, str, int]] = []
    for name in workloads:
        for r in range(repeats):
            k = r % len(configs)
            rotated = configs[k:] + configs[:k]
            order += [(name, c, r) for c in rotated]
    return order


def summarize(rows: list[dict[str, Any]], fixed_start_s: float | None = None) -> list[dict[str, Any]]:
    """One row per workload × config: the median wall time over repeats (failed repeats excluded),
    worst-case rows and memory, median utilisation; plus ratios to the ideal bound and to the best
    other configuration of the same workload."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["workload"], row["config"]), []).append(row)
    out = []
    for (name, config), runs in groups.items():
        ok = [r for r in runs if r["status"] == "ok"]
        use = ok or runs
        statuses = sorted({r["status"] for r in runs})
        summary = {
            "workload": name,
            "config": config,
            "status": "ok" if len(ok) == len(runs) else ",".join(s for s in statuses if s != "ok"),
            "repeats": len(runs),
            "failed": len(runs) - len(ok),
            "wall_s": round(statistics.median(r["wall_s"] for r in use), 3),
            "wall_s_all": [r["wall_s"] for r in runs],
            "prep_s": round(statistics.median(r.get("prep_s", 0.0) for r in use), 3),
            "ideal_s": runs[0]["ideal_s"],
            "rows_in": runs[0]["rows_in"],
            "rows_out": min(r["rows_out"] for r in runs),
            "peak_memory_bytes": max(r.get("peak_memory_bytes", 0) for r in runs),
            "actor_utilization": round(statistics.median(r.get("actor_utilization", 0.0) for r in use), 4),
            "batch_size": runs[0].get("batch_size"),
            "scaling_step": runs[0].get("scaling_step"),
            "mean_batch_rows": runs[0].get("mean_batch_rows"),
            "first_call_s": round(statistics.median(r.get("first_call_s", 0.0) for r in use), 3),
            "error": next((r["error"] for r in runs if r.get("error")), None),
            # The search runs once (later repeats hit its cache): its full cost is the largest.
            "tune_s": max((r.get("tune_s", 0.0) for r in runs), default=0.0),
            # The simulator's prediction (bench.predict), the same for every repeat; None: not predicted.
            "predicted_wall_s": runs[0].get("predicted_wall_s"),
            "predicted_status": runs[0].get("predicted_status"),
            "prediction_note": runs[0].get("prediction_note"),
            "prediction_basis": runs[0].get("prediction_basis"),  # what it was calibrated on (never this run)
        }
        summary["prediction_error"], summary["prediction_ok"] = judge(
            summary["predicted_wall_s"], summary["predicted_status"], summary["wall_s"], summary["status"]
        )
        summary["vs_ideal"] = round(summary["wall_s"] / summary["ideal_s"], 2) if summary["ideal_s"] else None
        # The same ratio after the fixed start of any query here (Bench.fixed_start: a query with this
        # actor pool and next to no rows); what a configuration adds before its first call still counts.
        if fixed_start_s is not None and summary["ideal_s"]:
            summary["vs_ideal_after_start"] = round((summary["wall_s"] - fixed_start_s) / summary["ideal_s"], 2)
        else:
            summary["vs_ideal_after_start"] = None
        out.append(summary)
    for summary in out:
        # daftscale and daftscale-tuned are compared with what a user has without daftscale, not each other.
        others = [
            o["wall_s"]
            for o in out
            if o["workload"] == summary["workload"]
            and o["config"] != summary["config"]
            and not (summary["config"].startswith("daftscale") and o["config"].startswith("daftscale"))
            and o["status"] == "ok"
        ]
        best = min(others) if others else None
        summary["best_other_s"] = best
        summary["vs_best_other"] = round(summary["wall_s"] / best, 2) if best and summary["status"] == "ok" else None
        plain = next((o for o in out if o["workload"] == summary["workload"] and o["config"] == "daftscale"), None)
        comparable = plain is not None and plain["status"] == "ok" and summary["status"] == "ok"
        summary["vs_daftscale"] = (
            round(summary["wall_s"] / plain["wall_s"], 2)
            if summary["config"] == "daftscale-tuned" and comparable and plain is not None
            else None
        )
    return out


def daftscale_pipeline(workload: Workload, files: list[str]) -> Any:
    """The workload as a daftscale pipeline: ``read → plan.apply(df) → plan.udf(model)``."""
    import daft

    from daftscale.pipeline import Pipeline

    def build(plan: Any) -> Any:
        model = plan.udf(SleepModel, return_dtype=daft.DataType.int64(), init_args=model_args(workload), name="Model")
        return build_daft(workload, files, plan.apply, model)

    return Pipeline(build, name=f"bench-{workload.name}")


def start_cluster(nodes: int, cpus: int) -> contextlib.AbstractContextManager[Any]:
    """A local multi-node Ray cluster on loopback (daftscale's own), with Daft's runner set to it."""
    from daftscale.cluster import local_cluster

    @contextlib.contextmanager
    def cm() -> Any:
        import daft

        with local_cluster(nodes, cpus) as started:
            os.environ["RAY_ADDRESS"] = started.address
            daft.set_runner_ray(address=started.address, noop_if_initialized=True)
            yield started

    return cm()


def register_by_value() -> None:
    """Ship the bench modules to Ray workers by value: workers need not find ``bench`` on their path."""
    import sys

    import ray.cloudpickle

    for name in ("bench.workloads", "bench.raydata", "bench.harness"):
        module = sys.modules.get(name)
        if module is not None:
            ray.cloudpickle.register_pickle_by_value(module)
            with contextlib.suppress(ImportError):
                import cloudpickle

                cloudpickle.register_pickle_by_value(module)
