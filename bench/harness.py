"""Run every workload under every configuration in one Ray cluster, measure each run the same way.

Every figure comes from the run itself, through daftscale's run machinery: UDF calls are timed inside
the actors and sent to a :class:`~daftscale.udf.RayCollector`, resident memory is sampled per node by
:class:`~daftscale.run.NodeMemorySampler`, utilisation is :func:`daftscale.report.actor_utilization`
of those calls, rows out are counted from the partitions that come back. The ``daftscale`` configuration
is :func:`daftscale.run.run` called as ``daftscale run pipeline.py`` calls it (``plan="auto"``, nothing
given beyond the cluster and what the pipeline itself declares).

``wall_s`` is what the user waits for. For the peers: from the moment the DataFrame (or Dataset) starts
executing until the last partition is back (actor pool start included). For ``daftscale``: the whole
``run()`` call, its probe, profiling, calibration and planning included; ``prep_s`` is the part before
the query (``wall_s`` minus the report's query time), shown beside it, already counted in ``wall_s``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import raydata
from bench.configs import (
    CONFIGS,
    SEED_BATCH,
    SEED_PARTITIONS,
    TUNE_BUDGET_S,
    TUNE_SAMPLE,
    ExpertPoint,
    expert_grid,
)
from bench.workloads import (
    Costs,
    SleepModel,
    Workload,
    build_daft,
    make_data,
    measure_model_costs,
    model_args,
    model_class,
    model_return_dtype,
    profile_read,
    sample_values,
)


@dataclass
class Sizing:
    """What :func:`daftscale.udf.actor_udf` reads from a plan (batch size, actors, resources), for the
    configurations that have none.

    ``batch_size=None`` leaves Daft's own default (``@daft.method.batch`` without ``batch_size``).
    """

    batch_size: int | None
    concurrency: int
    udf_cpus: float = 1.0
    udf_gpus: float = 0.0

    @property
    def udf_batch_size(self) -> int | None:
        return self.batch_size


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


def count_partitions(df: Any) -> tuple[int, int]:
    """Execute ``df`` and return ``(rows, partitions)``, counted as ``daftscale run`` counts them
    (:func:`daftscale.output.count_partitions`): on Ray from each result's metadata or by a task where the
    partition lives, so no partition's data moves to the driver to be counted, for daftscale's
    configurations and the Daft peers alike."""
    import threading

    from daftscale.output import count_partitions as count_on_workers

    counts: list[int] = []
    count_on_workers(df, threading.Event(), counts.append)
    return sum(counts), len(counts)


# A peer that never finishes must not stop the bench: it is stopped after this long and reported "stalled"
# (seen once: Ray Data 2.59 on W4 waited over 10 minutes with its actors idle, where it had failed with an
# out-of-memory error after 17 s before). The slowest finishing peer at --quick took under 90 s.
PEER_TIMEOUT_S = 300.0
PEER_STOP_GRACE_S = 60.0


class PeerStalled(Exception):
    """A configuration's query gave no result within ``PEER_TIMEOUT_S``; its actors were killed."""


def bounded(execute: Callable[[Any], tuple[int, int]], target: Any, timeout_s: float) -> tuple[int, int]:
    """``execute(target)`` on a thread, stopped (its Daft and Ray Data actors killed) after ``timeout_s``."""
    from daftscale.watchdog import kill_ray_actors

    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = execute(target)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=work, name="bench-peer", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        import ray

        killed = kill_ray_actors(("UDFActor", "MapWorker"), what="UDF actor") if ray.is_initialized() else "no Ray"
        thread.join(PEER_STOP_GRACE_S)
        raise PeerStalled(f"no result after {timeout_s:.0f} s: stopped ({killed})")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def measure(execute: Callable[[Any], tuple[int, int]], concurrency: int, build: Callable[[Any], Any]) -> dict[str, Any]:
    """One measured run of a configuration daftscale does not plan (the Daft peers, the expert, Ray Data).

    ``build(sink)`` makes the query with its UDF recording into ``sink`` (a
    :class:`daftscale.udf.RayCollector`'s); ``execute(query)`` runs it and returns ``(rows, partitions)``.
    Node memory is sampled and the UDF calls collected as ``daftscale run`` does, and the figures come back
    as a dict: status and error (``oom`` or ``error``, one line), wall time, rows and partitions out, peak
    memory, actor utilisation, the UDF calls' count, rows and mean rows, actors used, the UDF stage's span
    and the first call's start."""
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
            result["rows_out"], result["partitions"] = bounded(execute, target, PEER_TIMEOUT_S)
        except PeerStalled as exc:
            result["status"], result["error"] = "stalled", str(exc)
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
    """One benchmark session on a running Ray cluster: data, measured model costs, and one run at a time."""

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
        self._measured: dict[str, Workload] = {}
        self._read_profiles: dict[str, float | None] = {}
        self._expert_winner: dict[str, ExpertPoint] = {}
        self.notes: list[str] = []
        # Tuning results are cached per bench run only: a cache left by an earlier run may come from
        # another planner.
        shutil.rmtree(os.path.join(out_dir, "tune-cache"), ignore_errors=True)

    def files(self, workload: Workload) -> list[str]:
        if workload.name not in self._files:
            self._files[workload.name] = make_data(workload, os.path.join(self.out_dir, "data", workload.name))
        return self._files[workload.name]

    def actors(self, workload: Workload) -> int:
        """The actor pool every configuration gets on this workload (W7: one per real core)."""
        return workload.concurrency or self.concurrency

    def measured(self, workload: Workload) -> Workload:
        """The workload with its real model's costs measured once in this process (W7), for the ideal bound."""
        if workload.name not in self._measured:
            self._measured[workload.name] = measure_model_costs(workload)
        return self._measured[workload.name]

    def warm_up(self) -> None:
        """One tiny Daft query with an actor UDF and one tiny Ray Data pipeline, not measured: the first
        query on a fresh cluster starts Daft's per-node workers and Ray's worker processes, a one-time
        cost that would otherwise land on whichever configuration happens to run first."""
        tiny, files = self._tiny_data()
        count_partitions(self._tiny_query())
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
            count_partitions(query)
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
            SleepModel, Sizing(8, self.concurrency), return_dtype=daft.DataType.int64(), init_args=model_args(tiny)
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
        workload = self.measured(workload)
        files = self.files(workload)
        self.settle()
        started = time.time()
        try:
            if config in ("ray-data", "ray-data-recommended"):
                measured = self._ray_data(workload, files, recommended=config == "ray-data-recommended")
            elif config in ("daftscale", "daftscale-tuned"):
                measured = self._daftscale(workload, files, tuned=config == "daftscale-tuned")
            elif config == "expert":
                measured = self._expert(workload, files)
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
            "udf_rows_expected": workload.udf_rows,
            "rows_out_expected": workload.rows_out,
            "ideal_s": round(workload.ideal_s(self.actors(workload), self.task_slots), 3),
            "concurrency": self.actors(workload),
            "prep_s": 0.0,
            "peak_memory_bytes": 0,
            "actor_utilization": 0.0,
            **measured,
        }
        row["lost_rows"] = row["rows_out_expected"] - row["rows_out"] if row["status"] == "ok" else None
        return row

    def _daft_baseline(self, workload: Workload, files: list[str], config: str) -> dict[str, Any]:
        actors = self.actors(workload)
        if config == "daft-default":
            return self._daft_run(workload, files, Sizing(None, actors), lambda df: df, {}, "none")
        if config == "daft-dynamic-batching":
            knobs = {"enable_dynamic_batching": True}
            return self._daft_run(
                workload, files, Sizing(None, actors), lambda df: df, knobs, "none (enable_dynamic_batching=True)"
            )
        if config == "seed-recipe":
            if workload.kind != "heavy":
                scale, step = (lambda df: df.repartition(SEED_PARTITIONS)), f"repartition({SEED_PARTITIONS})"
            else:
                scale, step = (lambda df: df.into_batches(SEED_BATCH)), f"into_batches({SEED_BATCH})"
            return self._daft_run(workload, files, Sizing(SEED_BATCH, actors), scale, {}, step)
        raise ValueError(f"unknown configuration {config!r}: pick from {', '.join(CONFIGS)}")

    def _daft_run(
        self,
        workload: Workload,
        files: list[str],
        sizing: Sizing,
        scale: Callable[[Any], Any],
        knobs: dict[str, Any],
        step: str,
    ) -> dict[str, Any]:
        """One Daft run with a hand-written scaling step and UDF batch size (the peers and the expert)."""
        import daft

        from daftscale.udf import actor_udf

        def build(_sink: Any) -> Any:
            model = actor_udf(
                model_class(workload),
                sizing,
                return_dtype=model_return_dtype(workload),
                init_args=model_args(workload),
                name="Model",
            )
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No columns specified for repartition")
                return build_daft(workload, files, scale, model)

        def execute(df: Any) -> tuple[int, int]:
            with daft.execution_config_ctx(**knobs):
                return count_partitions(df)

        measured = measure(execute, sizing.concurrency, build)
        measured["batch_size"] = sizing.batch_size
        measured["scaling_step"] = step
        return measured

    def _expert(self, workload: Workload, files: list[str]) -> dict[str, Any]:
        """The best of the expert grid (:func:`expert_grid`). The first run of a workload runs every point and
        keeps the fastest that finished; later repeats run only that winner, so the median is the winner's."""
        actors = self.actors(workload)
        winner = self._expert_winner.get(workload.name)
        points = [winner] if winner is not None else expert_grid(workload, actors)
        tried = []
        for point in points:
            self.settle()
            measured = self._daft_run(workload, files, Sizing(point.batch_size, actors), point.scale, {}, point.name)
            tried.append((point, measured))
            self.log(f"    expert {point.name}: {measured['status']} {measured['wall_s']:.2f}s")
        done = [(p, m) for p, m in tried if m["status"] == "ok" and m["rows_out"] == workload.rows_out]
        point, best = min(done, key=lambda pm: pm[1]["wall_s"]) if done else tried[0]
        if winner is None and done:
            self._expert_winner[workload.name] = point
        best["expert_point"] = point.name
        best["expert_grid"] = [{"point": p.name, "status": m["status"], "wall_s": m["wall_s"]} for p, m in tried]
        return best

    def _ray_data(self, workload: Workload, files: list[str], *, recommended: bool) -> dict[str, Any]:
        raydata.quiet()
        actors = self.actors(workload)
        blocks = self.task_slots if recommended else None
        batch = raydata.recommended_batch_size(workload, actors) if recommended else None

        def build(sink: Any) -> Any:
            return raydata.build_raydata(workload, files, actors, sink, num_blocks=blocks, batch_size=batch)

        def execute(ds: Any) -> tuple[int, int]:
            rows = batches = 0
            for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows += block.num_rows
                batches += 1
            return rows, batches

        measured = measure(execute, actors, build)
        measured["batch_size"] = batch if recommended else "Ray Data default"
        if recommended:
            measured["scaling_step"] = f"override_num_blocks={blocks}"
        else:
            measured["scaling_step"] = "Ray Data defaults" + (
                f" (join num_partitions={actors})" if workload.shape == "join" else ""
            )
        return measured

    def _daftscale(self, workload: Workload, files: list[str], *, tuned: bool = False) -> dict[str, Any]:
        """``daftscale run pipeline.py`` on this cluster: ``run(pipeline, runner="ray", plan="auto")`` with
        nothing but what the pipeline declares (its actor pool, W4's memory budget). Its wall time is the
        whole call: probe, profiling, calibration, planning and the query. ``daftscale-tuned`` is
        ``daftscale tune`` (same pipeline, no options), then a run of the winning plan; the search is
        reported as ``tune_s`` beside the wall time (it runs once: later repeats hit its cache)."""
        from daftscale.errors import DaftscaleError
        from daftscale.run import run

        pipe = daftscale_pipeline(workload, files, self.actors(workload))
        tuning: dict[str, Any] = {}
        started = time.time()
        try:
            if tuned:
                from daftscale.tune import tune

                result = tune(
                    pipe,
                    runner="ray",
                    sample=TUNE_SAMPLE,
                    budget_s=self.tune_budget_s,
                    cache_dir=os.path.join(self.out_dir, "tune-cache"),
                    progress=False,
                )
                tuning = {
                    "tune_s": round(result.elapsed_s, 3),
                    "tune_cached": result.cached,
                    "tune_speedup": result.speedup,
                }
                started = time.time()
                report = run(pipe, runner="ray", plan=result.best, progress=False)
            else:
                report = run(pipe, runner="ray", plan="auto", progress=False)
        except DaftscaleError as exc:
            status, error = _classify(exc)
            return {"status": status, "error": error, "rows_out": 0, "wall_s": round(time.time() - started, 3)}
        wall = round(time.time() - started, 3)
        if workload.name not in self._read_profiles:
            # For the simulator's predictions only (a run report times UDF calls, not the read step).
            self._read_profiles[workload.name] = profile_read(workload)
        from daftscale.plan import ScalingPlan

        plan = report.plan
        decision = plan.get("decision") or {}
        if decision.get("scaling_step") is False:
            # Calibration kept Daft's default: the plan's numbers are the formula's, not what ran.
            step = "none (calibration kept Daft's default)"
        elif plan["strategy"] == "shuffle":
            step = f"{plan['partition_op']}({plan['partitions']})"
            if plan.get("into_batches"):
                step += f" + into_batches({plan['into_batches']})"
        elif plan.get("into_batches"):
            step = f"into_batches({plan['into_batches']})"
        else:
            step = "none"
        return {
            "status": "ok",
            "error": None,
            "wall_s": wall,
            "query_s": report.wall_s,
            # The part of wall_s before the query: probe, profiling, calibration, planning.
            "prep_s": round(max(0.0, wall - report.wall_s), 3),
            "rows_in_measured": report.rows_in,
            "rows_out": report.rows_out,
            "partitions": report.partitions,
            "peak_memory_bytes": report.peak_memory_bytes,
            "actor_utilization": report.actor_utilization,
            "udf_calls": report.batches,
            "udf_rows": sum(c["rows"] for c in report.udf_calls),
            # Unknown (None) when the run could not read its call records: say so rather than divide by it.
            "mean_batch_rows": (
                None
                if report.batches is None
                else round(sum(c["rows"] for c in report.udf_calls) / max(report.batches, 1), 1)
            ),
            "actors_used": report.actors_used,
            "stage_span_s": report.stage_span_s,
            "first_call_s": round(min((c["start"] for c in report.udf_calls), default=0.0), 3),
            # What the UDF ran with: the plan's B, or None where calibration kept Daft's own batch.
            "batch_size": ScalingPlan.from_dict(plan).udf_batch_size,
            "scaling_step": step,
            "plan_steps": plan["steps"],
            "read_seconds_per_row": self._read_profiles[workload.name],
            "plan_warnings": [w["code"] for w in plan["warnings"]],
            # The whole run report, for calibrating the simulator (run_bench takes it out of the row).
            "_report": report.to_dict(),
            **tuning,
        }

    # -- for the probes (bench/probes): the profiled planner options the bench used before issue 14 ----

    def planner_kwargs(self, workload: Workload, udf_profile: Any) -> dict[str, Any]:
        """The planner options of a profiled daftscale run: the actor pool, the UDF's declared memory (W4)
        and, when given, a UDF profile. The ``daftscale`` configuration no longer passes these (its
        pipeline declares the pool and memory, and ``run`` finds the rest); the probes still do."""
        from daftscale.plan import UdfResources

        kwargs: dict[str, Any] = {"concurrency": self.actors(workload)}
        if workload.udf_memory:
            kwargs["udf"] = UdfResources.of(memory=workload.udf_memory)
        if udf_profile is not None:
            kwargs["udf_profile"] = udf_profile
        return kwargs

    def profiles(self, workload: Workload) -> tuple[Any, float | None]:
        """The model UDF profiled in this process on a small sample, and the read step's seconds per row
        (None without one): for the probes, which compare profiled plans."""
        from daftscale.udfprofile import profile_udf

        udf_profile = profile_udf(
            model_class(workload),
            sample_values(workload, max(workload.profile_batch_sizes)),
            init_args=model_args(workload),
            batch_sizes=workload.profile_batch_sizes,
            repeats=3,
        )
        return udf_profile, profile_read(workload)


def daftscale_pipeline(workload: Workload, files: list[str], concurrency: int | None = None) -> Any:
    """The workload as a daftscale pipeline file would write it: ``read → plan.apply(df) → ... →
    plan.udf(model)`` (:func:`build_daft`), declared with what the pipeline's author knows and every other
    configuration is given too: the model's actor pool (``concurrency``, as ``@daft.cls(max_concurrency=...)``
    would say) and, for W4, the model's memory per actor (``udf=UdfResources(memory=...)``). No UDF
    profile, batch size or scaling numbers: those are daftscale's to find. ``concurrency=None`` declares no
    pool (the probes pass their planner options themselves)."""
    from daftscale.pipeline import Pipeline
    from daftscale.plan import UdfResources

    def build(plan: Any) -> Any:
        model = plan.udf(
            model_class(workload),
            return_dtype=model_return_dtype(workload),
            init_args=model_args(workload),
            name="Model",
        )
        return build_daft(workload, files, plan.apply, model)

    declared: dict[str, Any] = {} if concurrency is None else {"concurrency": concurrency}
    if workload.udf_memory:
        declared["udf"] = UdfResources.of(memory=workload.udf_memory)
    return Pipeline(build, declared, name=f"bench-{workload.name}")


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
