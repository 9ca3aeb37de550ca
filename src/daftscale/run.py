"""Running a pipeline for real: set up the runner, plan, execute, measure, and report.

:func:`run` owns the run's lifecycle: it starts (or joins) the runtime — Daft's native runner, an
existing Ray cluster, or a local multi-node Ray cluster started for the run — and always tears down
what it started, also on error or Ctrl-C. Every figure in the :class:`~daftscale.report.RunReport`
comes from the run itself: rows counted at the scaling step and at the output, partitions as they
come out, UDF calls timed inside the actors (:mod:`daftscale.udf`), and resident memory sampled per
node while the query runs (:class:`NodeMemorySampler`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.errors import ClusterError, ConfigError, DaftscaleError, RunError
from daftscale.pipeline import Pipeline, build_with, load_pipeline, probe
from daftscale.plan import ScalingPlan
from daftscale.report import RunReport
from daftscale.udf import make_collector, recording

# How often resident memory is sampled: fine enough to catch a batch's peak (batches take tens of
# milliseconds to seconds), coarse enough that walking the process tree costs under 1 % of a core.
MEMORY_SAMPLE_INTERVAL_S = 0.2

# How often the progress line polls the UDF call records.
PROGRESS_INTERVAL_S = 0.5

RUNNERS = ("native", "ray")


# ---------------------------------------------------------------------------------------------------
# Resident memory per node


def _tree_rss(root_pid: int, *, include_root: bool) -> int:
    """Resident bytes of a process's descendants (and itself): RSS, so shared pages count once per process."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = root.children(recursive=True) + ([root] if include_root else [])
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


class _Sampler:
    """A thread that keeps the peak of ``measure()`` until stopped."""

    def __init__(self, measure: Any, interval_s: float = MEMORY_SAMPLE_INTERVAL_S) -> None:
        self._measure = measure
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._loop, name="daftscale-memory", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, int(self._measure()))
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


class NodeMemorySampler:
    """Peak resident memory per node while a query runs.

    Native runner: this process and its children (Daft's UDF actor processes), on a node named by
    the host name.
    Ray: one zero-CPU Ray actor pinned to each node sums the RSS of every process under that node's
    raylet (Daft's workers and UDF actors); nodes are named by the first 8 hex digits of their Ray node
    id, as UDF call records are.
    """

    def __init__(self, runner: str) -> None:
        self.runner = runner
        self._local: _Sampler | None = None
        self._actors: list[Any] = []
        if runner == "ray":
            self._start_ray()
        else:
            self._local = _Sampler(lambda: _tree_rss(os.getpid(), include_root=True))

    def _start_ray(self) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @ray.remote(num_cpus=0)
        class _NodeSampler:
            def __init__(self, interval_s: float) -> None:
                # A Ray actor's parent is its node's raylet: everything under it runs on this node.
                raylet = os.getppid()
                self.node = ray.get_runtime_context().get_node_id()[:8]
                self.sampler = _Sampler(lambda: _tree_rss(raylet, include_root=False), interval_s)

            def stop(self) -> tuple[str, int]:
                return self.node, self.sampler.stop()

        for node in ray.nodes():
            if node.get("Alive"):
                strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
                self._actors.append(_NodeSampler.options(scheduling_strategy=strategy).remote(MEMORY_SAMPLE_INTERVAL_S))

    def stop(self) -> dict[str, int]:
        if self._local is not None:
            # Named like the UDF call records on this runner (the host name), so the two line up.
            return {socket.gethostname(): self._local.stop()}
        import ray

        peaks: dict[str, int] = {}
        for actor in self._actors:
            with contextlib.suppress(Exception):
                node, peak = ray.get(actor.stop.remote(), timeout=30)
                peaks[node] = peak
            with contextlib.suppress(Exception):
                ray.kill(actor)
        return peaks


# ---------------------------------------------------------------------------------------------------
# Runtimes


@contextlib.contextmanager
def runtime(
    runner: str, *, ray_address: str | None = None, local_cluster: str | tuple[int, int] | None = None
) -> Iterator[ClusterSpec]:
    """Set Daft's runner for this run and yield the cluster it runs on; tear down whatever was started.

    Daft allows one runner per process, so a process that already ran on Ray cannot switch to native
    (and vice versa): run each in its own process, as the CLI does.
    """
    import daft
    from daft.runners import _get_runner

    from daftscale import cluster as cluster_mod

    if runner == "native":
        current = _get_runner()
        if current is not None and getattr(current, "name", "native") != "native":
            raise RunError(
                "this process already runs Daft on Ray, and Daft's runner cannot change: "
                "run the native pipeline in a new process (daftscale run --runner native)"
            )
        if current is None:
            daft.set_runner_native()
        yield cluster_mod.this_machine()
        return

    import ray

    with contextlib.ExitStack() as stack:
        if local_cluster is not None:
            if ray.is_initialized():
                raise RunError(
                    "Ray is already running in this process: drop --local-cluster to run on it, or run in a new process"
                )
            nodes, cpus = (
                cluster_mod.parse_local_cluster(local_cluster) if isinstance(local_cluster, str) else local_cluster
            )
            started = stack.enter_context(cluster_mod.local_cluster(nodes, cpus))
            # Daft's UDF actors and workers start with their own loopback cluster connection.
            os.environ.setdefault("RAY_ADDRESS", started.address)
        elif not ray.is_initialized():
            address = cluster_mod.check_ray_address(ray_address or "auto")
            try:
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                raise ClusterError(
                    f"could not join the Ray cluster at {address}: {exc}: check the address and Ray versions"
                ) from exc
            stack.callback(ray.shutdown)
        try:
            daft.set_runner_ray(noop_if_initialized=True)
        except Exception as exc:
            current = _get_runner()
            if current is None or getattr(current, "name", "") != "ray":
                raise RunError(
                    f"cannot switch Daft to the Ray runner in this process ({exc}): run in a new process"
                ) from exc
        yield cluster_mod.from_ray_nodes(ray.nodes())


# ---------------------------------------------------------------------------------------------------
# Running


def _resolve_plan(plan: str | ScalingPlan | None) -> ScalingPlan | None:
    if plan is None or (isinstance(plan, str) and plan == "auto"):
        return None
    if isinstance(plan, ScalingPlan):
        return plan
    path = os.fspath(plan)
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read plan file {path} ({exc.strerror}): pass --plan auto or a plan.json") from exc
    return ScalingPlan.from_json(text)


def _check_report_dir(report_dir: str | None, overwrite: bool) -> None:
    if report_dir and os.path.exists(os.path.join(report_dir, "report.json")) and not overwrite:
        raise RunError(f"{report_dir} already holds a report: pass --overwrite, or choose another --report directory")


class _Execution(threading.Thread):
    """Executes the DataFrame off the main thread so the main thread can show progress and take Ctrl-C."""

    def __init__(self, df: Any, execution_config: dict[str, Any]) -> None:
        super().__init__(name="daftscale-run", daemon=True)
        self.df = df
        self.execution_config = execution_config
        self.rows = 0
        self.partitions = 0
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        import daft

        try:
            with daft.execution_config_ctx(**self.execution_config):
                for part in self.df.iter_partitions():
                    # On Ray each partition arrives as an ObjectRef; fetch it only to count its rows.
                    if not hasattr(part, "__len__"):
                        import ray

                        part = ray.get(part)
                    self.partitions += 1
                    self.rows += len(part)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.time()


def run(
    pipeline_or_path: Pipeline | str | os.PathLike[str],
    *,
    runner: str = "native",
    ray_address: str | None = None,
    local_cluster: str | tuple[int, int] | None = None,
    plan: str | ScalingPlan | None = "auto",
    report_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    console: Any = None,
    **planner_kwargs: Any,
) -> RunReport:
    """Plan (unless a plan is given), run and measure a pipeline; write the report if ``report_dir``.

    Args:
        pipeline_or_path: a :class:`~daftscale.pipeline.Pipeline` or the path of a pipeline file.
        runner: ``"native"`` (Daft's default, nothing to start) or ``"ray"``; implied by
            ``ray_address`` / ``local_cluster``.
        ray_address: ``HOST:PORT`` or ``"auto"`` of a running Ray cluster (checked first: an address
            that does not answer fails within seconds).
        local_cluster: ``"NxC"`` or ``(N, C)``: start N local Ray nodes of C CPUs for this run only.
        plan: ``"auto"`` (profile the DataFrame at the scaling step and plan for this cluster), a
            :class:`ScalingPlan`, or the path of a plan JSON file.
        report_dir: write ``report.json``, ``report.html`` and the plot PNGs there.
        overwrite: replace an existing report in ``report_dir``.
        progress: show the progress line (rows done, rows/s, actors busy) on stderr.
        console: a ``rich.console.Console`` for the progress line (default: stderr).
        **planner_kwargs: options for :func:`daftscale.plan.plan`, over the pipeline's own.
    """
    if runner not in RUNNERS:
        raise ConfigError(f"--runner must be native or ray, got {runner!r}: pick one of those")
    if ray_address is not None and local_cluster is not None:
        raise ConfigError("--ray-address and --local-cluster exclude each other: pass one")
    if ray_address is not None or local_cluster is not None:
        runner = "ray"
    report_path = os.fspath(report_dir) if report_dir is not None else None
    _check_report_dir(report_path, overwrite)
    given_plan = _resolve_plan(plan)
    pipe = load_pipeline(pipeline_or_path)
    kwargs = {**pipe.planner_kwargs, **{k: v for k, v in planner_kwargs.items() if v is not None}}

    with runtime(runner, ray_address=ray_address, local_cluster=local_cluster) as cluster:
        report = _run_on(pipe, runner, cluster, given_plan, kwargs, progress=progress, console=console)
    if report_path is not None:
        report.write(report_path, overwrite=overwrite)
    return report


def _run_on(
    pipe: Pipeline,
    runner: str,
    cluster: ClusterSpec,
    given_plan: ScalingPlan | None,
    planner_kwargs: dict[str, Any],
    *,
    progress: bool,
    console: Any,
) -> RunReport:
    from daftscale.plan import plan as make_plan
    from daftscale.profile import profile_dataframe

    started = time.time()
    scaling = probe(pipe)
    if given_plan is None:
        data = profile_dataframe(scaling.scaling_input)
        rows_in = data.rows
        chosen = make_plan(data, cluster, **planner_kwargs)
    else:
        rows_in = _count(scaling.scaling_input)
        chosen = given_plan

    collector = make_collector(runner)
    sampler: NodeMemorySampler | None = None
    try:
        with recording(collector.sink):
            df = build_with(pipe, chosen)
        sampler = NodeMemorySampler(runner)
        run_start = time.time()
        execution = _Execution(df, chosen.execution_config)
        execution.start()
        _wait_with_progress(execution, collector, rows_in, chosen.concurrency, progress=progress, console=console)
        end = execution.finished_at or time.time()
        node_memory = sampler.stop()
        sampler = None
        if execution.error is not None:
            error = execution.error
            if isinstance(error, DaftscaleError):
                raise error
            raise RunError(f"the pipeline failed while running: {type(error).__name__}: {error}") from error
        calls, _ = collector.snapshot()
    finally:
        if sampler is not None:
            sampler.stop()
        collector.close()

    return RunReport.from_run(
        runner=runner,
        cluster=cluster,
        plan=chosen,
        pipeline=pipe.source or pipe.name,
        started_at=started,
        run_start=run_start,
        end=end,
        rows_in=rows_in,
        rows_out=execution.rows,
        partitions=execution.partitions,
        calls=calls,
        node_memory=node_memory,
    )


def _count(df: Any) -> int:
    try:
        return int(df.count_rows())
    except Exception as exc:
        raise RunError(f"could not count the rows at the scaling step: {exc}: check the pipeline's source") from exc


def _wait_with_progress(
    execution: _Execution,
    collector: Any,
    rows_in: int,
    concurrency: int,
    *,
    progress: bool,
    console: Any,
) -> None:
    if not progress:
        while execution.is_alive():
            execution.join(PROGRESS_INTERVAL_S)
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out = console or Console(stderr=True)
    columns = (
        TextColumn("[bold]running[/bold]"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TextColumn("{task.fields[busy]}/{task.fields[actors]} actors busy"),
        TimeElapsedColumn(),
    )
    start = time.time()
    with Progress(*columns, console=out, transient=False) as bar:
        task = bar.add_task("run", total=rows_in, rate=0.0, busy=0, actors=concurrency)
        while execution.is_alive():
            execution.join(PROGRESS_INTERVAL_S)
            with contextlib.suppress(Exception):
                calls, running = collector.snapshot()
                done = sum(c["rows"] for c in calls)
                elapsed = max(time.time() - start, 1e-9)
                busy = len({r["actor"] for r in running})
                bar.update(task, completed=min(done, rows_in), rate=done / elapsed, busy=busy)
        with contextlib.suppress(Exception):
            calls, _ = collector.snapshot()
            done = sum(c["rows"] for c in calls)
            bar.update(task, completed=min(done, rows_in), rate=done / max(time.time() - start, 1e-9), busy=0)


__all__ = ["NodeMemorySampler", "run", "runtime"]
