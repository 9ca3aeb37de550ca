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
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.config import DEFAULT_STALL_TIMEOUT_S, format_bytes, parse_memory, require_positive_int
from daftscale.console import stderr_console
from daftscale.errors import ClusterError, ConfigError, DaftscaleError, PlanError, RunError
from daftscale.gpu import prepare_driver_cuda
from daftscale.health import MeasurementHealth
from daftscale.memory import NodeMemorySampler
from daftscale.output import (
    OutputTarget,
    WriteResult,
    count_partitions,
    discard_staging,
    output_summary,
    write_output,
)
from daftscale.pipeline import Pipeline, build_with, load_pipeline, probe
from daftscale.plan import ScalingPlan
from daftscale.report import RunReport
from daftscale.script import prepare_job
from daftscale.udf import ON_ERROR_CHOICES, make_collector, recording
from daftscale.watchdog import STATUS_STALLED, StallWatch, combine, resolve_stall_timeout, stop_stalled_query

# How often the progress line polls the UDF call records.
PROGRESS_INTERVAL_S = 0.5

RUNNERS = ("native", "ray")

# How long a stopped query (memory budget) gets to wind down before the run returns anyway; what is
# left is torn down with the runtime (a local cluster is shut down, the native runner dies with us).
STOP_GRACE_S = 15.0

# How long a stalled query gets to fail once its UDF workers are stopped: it errors out within a second
# when they were processes; a UDF stuck in a thread of this process never ends, so waiting longer is waste.
STALL_GRACE_S = 5.0

# Logical-plan operators that keep every row (Daft 0.7 names, from ``pretty_print(simple=True)``).
# When only these follow the scaling step, rows out must equal rows in, so the run checks it by
# default; any other operator (Filter, Limit, Explode, Join, Aggregate...) may change the count. An
# allow-list errs towards not checking: an unknown operator never fails a correct pipeline.
ROW_PRESERVING_OPS = frozenset(
    {
        "Project",
        "UDFProject",
        "ActorPoolProject",
        "Sort",
        "IntoBatches",
        "IntoPartitions",
        "Repartition",
        "MonotonicallyIncreasingId",
        "Window",
        "Source",
    }
)

# Statuses in report.json: "ok", or why the run did not finish as planned.
STATUS_OK = "ok"
STATUS_MEMORY = "stopped: memory budget"
STATUS_ROWS = "failed: rows lost"
# --max-memory was asked for but memory could not be sampled: the run is stopped rather than left unguarded.
STATUS_MEMORY_UNGUARDED = "failed: memory budget not enforced"


# ---------------------------------------------------------------------------------------------------
# Runtimes


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


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
            # Daft's UDF actors and workers start with their own loopback cluster connection. Set for this run
            # only: a value left over (from an earlier run in this process) would point them at a dead cluster.
            previous_address = os.environ.get("RAY_ADDRESS")
            os.environ["RAY_ADDRESS"] = started.address
            stack.callback(_restore_env, "RAY_ADDRESS", previous_address)
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
    fix = "make one with 'daftscale plan ... --format json > plan.json', or pass --plan auto"
    if not os.path.exists(path):
        raise PlanError(f"plan file {path} does not exist: {fix}")
    if os.path.isdir(path):
        raise PlanError(f"plan file {path} is a directory: pass the plan .json file inside it, or --plan auto")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"cannot read plan file {path} ({exc}): {fix}") from exc
    if not text.strip():
        raise PlanError(f"plan file {path} is empty: {fix}")
    try:
        return ScalingPlan.from_json(text)
    except PlanError as exc:
        raise PlanError(f"plan file {path}: {exc}") from exc


def _check_report_dir(report_dir: str | None, overwrite: bool) -> None:
    """Refuse before anything runs, so a long run never ends in 'cannot write the report'."""
    if not report_dir:
        return
    if os.path.exists(report_dir) and not os.path.isdir(report_dir):
        raise RunError(f"--report {report_dir} is a file, not a directory: choose a directory path")
    if os.path.exists(os.path.join(report_dir, "report.json")) and not overwrite:
        raise RunError(f"{report_dir} already holds a report: pass --overwrite, or choose another --report directory")


def check_plan_fits(plan: ScalingPlan, cluster: ClusterSpec, *, force: bool = False) -> None:
    """Refuse a given plan made for another cluster shape, or one predicted to run out of memory here.

    Shape is nodes, CPUs and GPUs per node (:meth:`ClusterSpec.shape`); a number the plan's cluster
    left undeclared is not compared. ``force`` runs the plan anyway (the user knows better).
    """
    if force:
        return
    made_for = plan.cluster or {}
    here = cluster.shape()
    differs = [
        key
        for key, value in here.items()
        if made_for.get(key) is not None and value is not None and float(made_for[key]) != float(value)
    ]
    if differs:
        planned = ClusterSpec.from_dict(made_for) if "nodes" in made_for else None
        raise RunError(
            f"the plan was made for {planned.describe() if planned else made_for} but this cluster is "
            f"{cluster.describe()} ({', '.join(differs)} differ): re-plan for this cluster with --plan auto "
            "(or 'daftscale plan' / 'daftscale tune' on it), or pass --force-plan to run it as it is"
        )
    if cluster.memory_per_node:
        from daftscale.simulate import simulate

        try:
            result = simulate(plan, cluster)
        except DaftscaleError:
            return  # a plan the simulator cannot model (no row count) is not refused for memory
        if result.oom:
            raise RunError(
                f"the plan would run out of memory on this cluster ({result.verdict}): "
                "re-plan with --plan auto, or pass --force-plan to run it anyway"
            )


def _rows_checkable(scaling_input: Any, output: Any) -> tuple[bool, str | None]:
    """``(check, note)``: check is True when only row-preserving operators follow the scaling step (see
    ROW_PRESERVING_OPS). ``note`` says why the check is off when that was not the pipeline's doing: Daft's
    plan text could not be read, so the check the run promises by default would be off without a word."""

    def ops(df: Any) -> Counter[str]:
        text = df._builder.pretty_print(simple=True)
        return Counter(re.findall(r"\*\s+([A-Za-z]+)", text))

    try:
        added = ops(output) - ops(scaling_input)
    except Exception as exc:  # a Daft without this private API: do not guess, say so
        return False, (
            f"the rows-in = rows-out check is off: Daft's plan text could not be read ({type(exc).__name__}: {exc}"[
                :200
            ]
            + "); pass --check-rows to check anyway"
        )
    return set(added) <= ROW_PRESERVING_OPS, None


def output_keeps_rows(pipe: Pipeline) -> bool:
    """True when the pipeline's output has a row for each row at its scaling step (nothing after it filters,
    joins, explodes or aggregates): what a sampled run's rows out can be checked against."""
    scaling = probe(pipe)
    checkable, _note = _rows_checkable(scaling.scaling_input, scaling.output)
    return checkable


def error_line(exc: BaseException) -> str:
    """One line for an error raised inside Daft or Ray: their messages carry whole remote tracebacks.

    Takes the last ``SomeError: message`` line (the root cause, printed last), else the first line.
    """
    text = str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [line for line in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*:", line)]
    if causes:
        return causes[-1][:400]
    return f"{type(exc).__name__}: {lines[0] if lines else 'no message'}"[:400]


class _RunStopped(RunError):
    """A run that did not finish as planned: carries the partial report to write and the one-line reason.

    A ``RunError``, so a caller of ``_run_on`` other than :func:`run` (the tuner's trials) sees a
    stalled or short run as the run's failure, in one line.
    """

    def __init__(self, report: RunReport, message: str) -> None:
        super().__init__(message)
        self.report = report
        self.message = message


class _Execution(threading.Thread):
    """Executes the DataFrame off the main thread so the main thread can show progress and take Ctrl-C.

    With an ``output`` target the rows are written there (staged, then moved into place whole) and
    counted from the written files; without one they are counted where they are and dropped
    (:mod:`daftscale.output`). Either way no partition's data is moved to the driver to be counted.
    """

    def __init__(self, df: Any, execution_config: dict[str, Any], output: OutputTarget | None = None) -> None:
        super().__init__(name="daftscale-run", daemon=True)
        self.df = df
        self.execution_config = execution_config
        self.output = output
        self.written: WriteResult | None = None
        self.rows = 0
        self.partitions = 0
        self.error: BaseException | None = None
        self.finished_at: float | None = None
        # Set by the main thread to stop the query (memory budget, Ctrl-C): checked between partitions,
        # where closing Daft's partition iterator ends the query. A write cannot stop part-way; its
        # staged files are removed when it ends, so the target never sees them.
        self.stop_requested = threading.Event()

    def _count(self, rows: int) -> None:
        self.partitions += 1
        self.rows += rows

    def run(self) -> None:
        import daft

        try:
            with daft.execution_config_ctx(**self.execution_config):
                if self.output is None:
                    count_partitions(self.df, self.stop_requested, self._count)
                else:
                    self.written = write_output(self.df, self.output)
                    self.rows, self.partitions = self.written.rows, len(self.written.files)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.time()


def resolve_runner(runner: str, ray_address: str | None, local_cluster: object | None) -> str:
    """Check the runner options and return the runner they imply (an address or local cluster means Ray)."""
    if runner not in RUNNERS:
        raise ConfigError(f"--runner must be native or ray, got {runner!r}: pick one of those")
    if ray_address is not None and local_cluster is not None:
        raise ConfigError("--ray-address and --local-cluster exclude each other: pass one")
    return "ray" if ray_address is not None or local_cluster is not None else runner


class Session:
    """Measured execution on one runtime: a context manager that owns it, and runs pipelines on it.

    The runtime is Daft's native runner, a running Ray cluster joined by address, or a local
    multi-node Ray cluster started for the session; what the session started is torn down when the
    ``with`` block ends, also on error or Ctrl-C. :meth:`execute` plans (unless given a plan), runs
    and measures one pipeline and returns its :class:`~daftscale.report.RunReport`. :func:`run` is a
    session opened for one pipeline (as ``httpx.get`` opens a short-lived client); the tuner runs its
    trials through :meth:`execute` on its session. (Calibration's sample runs still call the private
    ``_run_on`` from inside it, on the same runtime.)

    Example (not run here: it starts a local Ray cluster)::

        with daftscale.Session(local_cluster="2x2") as session:
            print(session.cluster.describe())
            report = session.execute("pipeline.py")
            tuned = session.execute("pipeline.py", plan=daftscale.ScalingPlan.from_json(text))
    """

    def __init__(
        self,
        runner: str = "native",
        *,
        ray_address: str | None = None,
        local_cluster: str | tuple[int, int] | None = None,
    ) -> None:
        self.runner = resolve_runner(runner, ray_address, local_cluster)
        if isinstance(local_cluster, str):
            from daftscale.cluster import parse_local_cluster

            parse_local_cluster(local_cluster)  # malformed NxC fails before anything is started
        self._runtime_options: dict[str, Any] = {"ray_address": ray_address, "local_cluster": local_cluster}
        self._stack: contextlib.ExitStack | None = None
        self._cluster: ClusterSpec | None = None

    @property
    def cluster(self) -> ClusterSpec:
        """The cluster the open session runs on (this machine for the native runner)."""
        if self._cluster is None:
            raise RunError("this daftscale Session is not open: use `with daftscale.Session(...) as session:`")
        return self._cluster

    def __enter__(self) -> Session:
        stack = contextlib.ExitStack()
        try:
            self._cluster = stack.enter_context(runtime(self.runner, **self._runtime_options))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc_info: object) -> None:
        stack, self._stack, self._cluster = self._stack, None, None
        if stack is not None:
            stack.close()

    def execute(
        self,
        pipeline: Pipeline | str | os.PathLike[str],
        *,
        plan: ScalingPlan | None = None,
        planner_kwargs: dict[str, Any] | None = None,
        progress: bool = False,
        console: Any = None,
        on_error: str | None = None,
        check_rows: bool | None = None,
        max_memory: int | None = None,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT_S,
        output: OutputTarget | None = None,
        calibrate: str | float = "off",
    ) -> RunReport:
        """Plan (unless ``plan`` is given), run and measure ``pipeline`` on this session's runtime.

        Options are those of :func:`run`, already checked (``max_memory`` in bytes, ``stall_timeout``
        in seconds or None for off, ``output`` from :func:`daftscale.script.prepare_job`). A run that
        did not finish as planned (memory budget, stall, rows lost) raises a :class:`RunError` whose
        ``report`` attribute is the partial report.
        """
        return _run_on(
            load_pipeline(pipeline),
            self.runner,
            self.cluster,
            plan,
            dict(planner_kwargs or {}),
            progress=progress,
            console=console,
            on_error=on_error,
            check_rows=check_rows,
            max_memory=max_memory,
            stall_timeout=stall_timeout,
            output=output,
            calibrate=calibrate,
        )


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
    on_error: str | None = None,
    check_rows: bool | None = None,
    force_plan: bool = False,
    max_memory: str | int | None = None,
    stall_timeout: float | None = None,
    output: str | os.PathLike[str] | None = None,
    output_format: str | None = None,
    append: bool = False,
    keep_udf_settings: bool = False,
    calibrate: str | float = "auto",
    **planner_kwargs: Any,
) -> RunReport:
    """Plan (unless a plan is given), run and measure a pipeline; write the report if ``report_dir``.

    Args:
        pipeline_or_path: a :class:`~daftscale.pipeline.Pipeline`, the path of a pipeline file, or the
            path of a plain Daft script (:mod:`daftscale.script`: run as it is, its write is the output).
        runner: ``"native"`` (Daft's default, nothing to start) or ``"ray"``; implied by
            ``ray_address`` / ``local_cluster``.
        ray_address: ``HOST:PORT`` or ``"auto"`` of a running Ray cluster (checked first: an address
            that does not answer fails within seconds).
        local_cluster: ``"NxC"`` or ``(N, C)``: start N local Ray nodes of C CPUs for this run only.
        plan: ``"auto"`` (profile the DataFrame at the scaling step and plan for this cluster), a
            :class:`ScalingPlan`, or the path of a plan JSON file.
        report_dir: write ``report.json``, ``report.html`` and the plot PNGs there.
        overwrite: replace an existing report in ``report_dir`` and an existing output.
        progress: show the progress line (rows done, rows/s, actors busy) on stderr.
        console: a ``rich.console.Console`` for the progress line (default: stderr).
        on_error: Daft's ``on_error`` for the pipeline's ``plan.udf`` UDFs that do not set their own:
            ``"raise"`` (Daft's default: the run fails with the UDF's error), ``"log"`` or ``"ignore"``
            (rows of a batch whose call raised come out null; the report counts them in
            ``rows_failed`` and keeps the first errors in ``udf_errors``).
        check_rows: fail the run (``RunError``, report status "failed: rows lost") unless rows out
            equal rows in. ``None`` (default) checks when only row-preserving operators follow the
            scaling step (no filter, limit, explode, join or aggregate); ``True`` always; ``False`` never.
        force_plan: run a given plan even if it was made for another cluster shape or is predicted
            to run out of memory here (both refused by default, see :func:`check_plan_fits`).
        max_memory: memory budget per node (``"8GiB"``): if any node's resident memory passes it, the
            query is stopped, what daftscale started is shut down, a partial report (status "stopped:
            memory budget") is written and a ``RunError`` raised.
        stall_timeout: the stall watchdog's floor in seconds (default 60; 0 turns it off). A run whose
            UDF calls stop starting and finishing for longer than ``max(floor, 5 × the longest call)``
            (``5 × floor`` before any call finished) is stopped: its UDF workers are terminated, a
            partial report (status "failed: stalled", each actor's state in ``stall``) is written and
            a ``RunError`` raised. A UDF that Daft runs in a thread of this process cannot be
            stopped: it stays blocked until the process exits (the CLI exits anyway).
        output: write the pipeline's rows to this directory (a script's own write goes here instead),
            whole or not at all (:mod:`daftscale.output`); an existing non-empty one needs ``overwrite``
            or ``append``. Without an output (and no write in a script) the rows are counted and dropped.
        output_format: ``"parquet"`` (default), ``"csv"`` or ``"json"``.
        append: add this run's files to an existing output.
        keep_udf_settings: a script's UDFs keep their author's concurrency and batch size (the plan is
            made around them) instead of the plan's.
        calibrate: with ``plan="auto"``, measure the pipeline on a sample on this runner first
            (:mod:`daftscale.calibrate`): ``"auto"`` (unless the job is tiny), ``"off"`` (the formula
            plan as ``daftscale plan`` makes it), or a budget in seconds. Its time counts in ``plan_s``
            (and ``calibration_s``) of the report.
        **planner_kwargs: options for :func:`daftscale.plan.plan`, over the pipeline's own.
    """
    from daftscale.calibrate import parse_calibrate

    runner = resolve_runner(runner, ray_address, local_cluster)
    calibrate = parse_calibrate(calibrate)
    if on_error is not None and on_error not in ON_ERROR_CHOICES:
        raise ConfigError(f"--on-error must be one of {', '.join(ON_ERROR_CHOICES)}, got {on_error!r}: pick one")
    budget = None if max_memory is None else parse_memory(max_memory, name="max_memory")
    stall_floor = resolve_stall_timeout(stall_timeout)
    # Counts are checked here, before a cluster starts or a pipeline loads, not only when the planner runs.
    for key in ("concurrency", "batch_size", "batches_per_task"):
        if planner_kwargs.get(key) is not None:
            require_positive_int(planner_kwargs[key], key)
    session = Session(runner, ray_address=ray_address, local_cluster=local_cluster)  # checks NxC before loading
    report_path = os.fspath(report_dir) if report_dir is not None else None
    _check_report_dir(report_path, overwrite)
    given_plan = _resolve_plan(plan)
    pipe = load_pipeline(pipeline_or_path)
    target = prepare_job(
        pipe,
        output=output,
        output_format=output_format,
        overwrite=overwrite,
        append=append,
        keep_udf_settings=keep_udf_settings,
    )
    kwargs = {**pipe.planner_kwargs, **{k: v for k, v in planner_kwargs.items() if v is not None}}

    stopped: _RunStopped | None = None
    with session:
        if given_plan is not None:
            check_plan_fits(given_plan, session.cluster, force=force_plan)
        try:
            report = session.execute(
                pipe,
                plan=given_plan,
                planner_kwargs=kwargs,
                progress=progress,
                console=console,
                on_error=on_error,
                check_rows=check_rows,
                max_memory=budget,
                stall_timeout=stall_floor,
                output=target,
                calibrate=calibrate,
            )
        except _RunStopped as exc:
            stopped = exc  # leave the runtime first: what daftscale started is shut down before we report
    if stopped is not None:
        if report_path is not None:
            # The directory held no report when the run began (checked above), so this adds, not clobbers.
            stopped.report.write(report_path, overwrite=overwrite)
        raise RunError(stopped.message + (f" (partial report in {report_path})" if report_path else ""))
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
    on_error: str | None = None,
    check_rows: bool | None = None,
    max_memory: int | None = None,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT_S,
    output: OutputTarget | None = None,
    calibrate: str | float = "off",
) -> RunReport:
    from daftscale.calibrate import calibrated_plan
    from daftscale.profile import profile_dataframe

    started = time.time()
    scaling = probe(pipe)
    if given_plan is None:
        data = profile_dataframe(scaling.scaling_input)
        rows_in = data.rows

        def run_sample(sampled: ScalingPlan) -> RunReport:
            # A calibration run: the same runtime, the pipeline's instrumented UDFs, a sample of the rows.
            return _run_on(
                pipe,
                runner,
                cluster,
                sampled,
                planner_kwargs,
                progress=False,
                console=None,
                on_error=on_error,
                check_rows=False,
                stall_timeout=stall_timeout,  # a sample run that stalls is stopped like the run itself
            )

        say = (console or stderr_console()).print if progress else (lambda _text: None)
        chosen = calibrated_plan(
            data,
            cluster,
            planner_kwargs,
            runner=runner,
            calibrate=calibrate,
            run_sample=run_sample,
            scaling_input=scaling.scaling_input,
            say=say,
        )
    else:
        # A sampled plan (calibration, tune) runs about sample_rows rows: no need to count the whole input.
        rows_in = getattr(given_plan, "sample_rows", 0) or _count(scaling.scaling_input)
        chosen = given_plan

    collector = make_collector(runner)
    sink = {**collector.sink, "on_error": on_error}
    sampler: NodeMemorySampler | None = None
    execution: _Execution | None = None
    try:
        with recording(sink) as instrumented:
            df = build_with(pipe, chosen)
        rows_note = None
        if check_rows is None:
            check_rows, rows_note = _rows_checkable(scaling.scaling_input, df)
        prepare_driver_cuda(chosen.udf_gpus, runner)  # on the main thread, before Daft's threads touch CUDA
        sampler = NodeMemorySampler(runner)
        run_start = time.time()
        execution = _Execution(df, chosen.execution_config, output)
        execution.start()
        stall = _stall_watch(collector, stall_timeout, instrumented, chosen, execution)
        memory_watch = _memory_watch(sampler, max_memory) if max_memory else None
        watch = combine(memory_watch, stall)
        reason = _wait_with_progress(
            execution, collector, rows_in, chosen.concurrency, progress=progress, console=console, watch=watch
        )
        stalled = stall is not None and stall.fired
        if reason is not None:
            # Stop the query and give it a moment to wind down; the runtime's teardown does the rest.
            execution.stop_requested.set()
            if stalled:
                # A stuck UDF never returns to Daft, so the query cannot stop between partitions: end its workers.
                reason += f" ({stop_stalled_query(runner)})"
            execution.join(STALL_GRACE_S if stalled else STOP_GRACE_S)
        end = execution.finished_at or time.time()
        node_memory = sampler.stop()
        memory_unmeasured, memory_missed = sampler.unmeasured, sampler.missed
        sampler = None
        _snapshot_error(collector)  # the failed calls, whose error a failed query's message names
        failed = list(collector.failed)
        if reason is None and execution.error is not None:
            error = execution.error
            if isinstance(error, DaftscaleError):
                raise error
            # Under log/ignore a raising UDF does not fail the query, so its records do not explain this error.
            raise RunError(_failure_message(error, failed if on_error in (None, "raise") else [])) from error
        # Read once more now the query is over (the first read may have missed the last records).
        records_error = _snapshot_error(collector)
        calls, _ = _merge_calls(collector) if records_error is None else ([], [])
        failed = list(collector.failed) if records_error is None else failed
        ready = list(collector.ready)
        health = MeasurementHealth(
            records_error=records_error,
            events=list(collector.events),
            query_finished=reason is None,
            rows_in=rows_in,
            rows_checked=bool(check_rows),
            rows_check_note=rows_note,
            memory_unmeasured=memory_unmeasured,
            memory_missed=memory_missed,
        )
    except BaseException:
        if execution is not None:
            # Ctrl-C or an error while waiting: let the query stop between partitions.
            execution.stop_requested.set()
        raise
    finally:
        if sampler is not None:
            sampler.stop()
        collector.close()
        if output is not None and execution is not None and execution.is_alive():
            # A stopped or interrupted write: give the query a moment to end (Daft stops its own engine on
            # Ctrl-C), then remove its staged files, so they never reach the target or outlive the run.
            execution.join(STOP_GRACE_S)
            discard_staging(output)

    report = RunReport.from_run(
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
        failed_calls=failed,
        ready=ready,
    )
    if execution.written is not None:
        report.output = output_summary(output, execution.written)
    health.apply(report)
    if reason is not None:
        if stalled:
            report.status = STATUS_STALLED
            report.stall = stall.state()  # type: ignore[union-attr]
        else:
            report.status = getattr(memory_watch, "status", STATUS_MEMORY)
        raise _RunStopped(report, f"{reason}: stopped the run after {execution.rows:,} of {rows_in:,} rows")
    if check_rows and report.rows_out != report.rows_in:
        report.status = STATUS_ROWS
        raise _RunStopped(
            report,
            f"the run produced {report.rows_out:,} rows from {rows_in:,} in and its pipeline does not filter: "
            "rows were lost; re-run it (check the Ray logs for dead workers), or pass --no-check-rows "
            "if the pipeline changes the row count on purpose",
        )
    return report


def _snapshot_error(collector: Any) -> str | None:
    """Read the call records once more; the error as one line when they cannot be read, else None."""
    try:
        collector.snapshot()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


def _merge_calls(collector: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The finished and running calls of the records the collector last read."""
    from daftscale.udf import split_calls

    return split_calls(collector.events)


def _failure_message(error: BaseException, failed: list[dict[str, Any]]) -> str:
    """The run's one-line error: the UDF's own error when a call raised, else the root cause."""
    if failed:
        first = min(failed, key=lambda f: f["start"])
        return (
            f"the UDF {first.get('udf', '')} raised {first['error']} on a batch of {first['rows']} rows "
            f"({len(failed)} failed call{'s' if len(failed) != 1 else ''}): fix the UDF, or pass "
            "--on-error log (or ignore) to turn the failed batches into null rows, counted in the report"
        )
    return f"the pipeline failed while running: {error_line(error)}: fix the cause above and run again"


# Checks of the wait loop (one per PROGRESS_INTERVAL_S) a node may go without a new memory sample, or the
# samplers without answering, before --max-memory is taken as not enforced: a few seconds, longer than a
# slow sample or a busy Ray scheduler, far shorter than the runs a budget guards.
UNGUARDED_CHECKS = 8


class _MemoryWatch:
    """A check for the wait loop: the reason to stop once any node's resident memory passes ``budget``,
    or once memory cannot be sampled (a budget that is not enforced must not look like one that is).
    :attr:`status` is the report status for the reason it gave."""

    def __init__(self, sampler: NodeMemorySampler, budget: int) -> None:
        self.sampler = sampler
        self.budget = budget
        self.status = STATUS_MEMORY
        self._silent: dict[str, int] = {}  # node: checks with a new missed sample and none taken since one was
        self._last: dict[str, tuple[int, int]] = {}  # node: (samples taken, samples missed) at the last check
        self._unanswered = 0
        self._error = ""

    def __call__(self) -> str | None:
        try:
            health = self.sampler.health()
            self._unanswered = 0
        except Exception as exc:  # a slow answer is not yet a reason to stop; many in a row are
            self._unanswered += 1
            self._error = f"{type(exc).__name__}: {exc}"[:200]
            health = {}
            if self._unanswered >= UNGUARDED_CHECKS:
                return self._unguarded("the memory samplers do not answer", self._error)
        for node, (_, samples, missed, error) in health.items():
            # Failing, not merely slow: no new sample since the last check, and a new missed one.
            fresh = samples > self._last.get(node, (0, 0))[0]
            failing = missed > self._last.get(node, (0, 0))[1]
            self._last[node] = (samples, missed)
            self._silent[node] = 0 if fresh else self._silent.get(node, 0) + failing
            if self._silent[node] >= UNGUARDED_CHECKS:
                return self._unguarded(f"node {node}'s memory sampling fails", error)
        over = {node: peak for node, (peak, samples, _, _) in health.items() if samples and peak > self.budget}
        if not over:
            return None
        node, peak = max(over.items(), key=lambda kv: kv[1])
        return (
            f"memory budget exceeded: node {node} reached {format_bytes(peak)} resident, over --max-memory "
            f"{format_bytes(self.budget)}; lower the batch size or actors per node, or raise --max-memory"
        )

    def _unguarded(self, what: str, error: str) -> str:
        self.status = STATUS_MEMORY_UNGUARDED
        return (
            f"--max-memory {format_bytes(self.budget)} cannot be enforced: {what} ({error or 'no answer'}); "
            "fix the cause (psutil must read the process table on every node) or run without --max-memory"
        )


def _memory_watch(sampler: NodeMemorySampler, budget: int) -> _MemoryWatch:
    """The wait loop's check for a memory budget (see :class:`_MemoryWatch`)."""
    return _MemoryWatch(sampler, budget)


def _stall_watch(
    collector: Any, floor_s: float | None, instrumented: list[str], plan: ScalingPlan, execution: _Execution
) -> StallWatch | None:
    """The stall watchdog for this run, when it is on and some UDF reports its calls (only they show progress)."""
    if floor_s is None or not instrumented:
        return None
    return StallWatch(
        collector,
        floor_s,
        started=time.time(),
        concurrency=plan.concurrency,
        rows_out=lambda: execution.rows,
        gpus=plan.udf_gpus,
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
    watch: Any = None,
) -> str | None:
    """Wait for the query, showing progress; returns the reason if ``watch()`` asked to stop it."""
    if not progress:
        while execution.is_alive():
            execution.join(PROGRESS_INTERVAL_S)
            reason = watch() if watch is not None else None
            if reason:
                return reason  # type: ignore[no-any-return]
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    out = console or stderr_console()
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
            reason = watch() if watch is not None else None
            if reason:
                return reason  # type: ignore[no-any-return]
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
    return None


__all__ = ["NodeMemorySampler", "Session", "check_plan_fits", "error_line", "output_keeps_rows", "run", "runtime"]
