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
import time
from collections.abc import Iterator, Sequence
from typing import Any

from daftscale.cluster import ClusterSpec
from daftscale.config import DEFAULT_STALL_TIMEOUT_S, parse_memory, require_positive_int
from daftscale.console import stderr_console
from daftscale.errors import ClusterError, ConfigError, DaftscaleError, PipelineError, PlanError, RunError
from daftscale.execution import (
    STATUS_MEMORY,
    STATUS_MEMORY_UNGUARDED,
    STATUS_OK,
    STATUS_ROWS,
    KeptInstruments,
    RunStopped,
    error_line,
    execute_measured,
    rows_checkable,
)
from daftscale.memory import NodeMemorySampler
from daftscale.output import (
    OutputTarget,
)
from daftscale.pipeline import Pipeline, load_pipeline, probe
from daftscale.plan import ScalingPlan
from daftscale.plan_handle import SampledPlan
from daftscale.report import RunReport
from daftscale.script import ScriptPipeline, continue_script, prepare_job, stop_script
from daftscale.udf import ON_ERROR_CHOICES
from daftscale.watchdog import resolve_stall_timeout

RUNNERS = ("native", "ray")


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
            if address != "auto":
                # As for --local-cluster: Daft's workers and UDF actors find the cluster through it.
                previous_address = os.environ.get("RAY_ADDRESS")
                os.environ["RAY_ADDRESS"] = address
                stack.callback(_restore_env, "RAY_ADDRESS", previous_address)
        try:
            daft.set_runner_ray(noop_if_initialized=True)
        except Exception as exc:
            current = _get_runner()
            if current is None or getattr(current, "name", "") != "ray":
                raise RunError(
                    f"cannot switch Daft to the Ray runner in this process ({exc}): run in a new process"
                ) from exc
        if getattr(_get_runner(), "name", "") != "ray":
            # set_runner_ray(noop_if_initialized=True) keeps a runner already chosen: the job would run on the
            # driver's native runner while the report said Ray.
            raise RunError(
                "Daft already runs this process on its native runner (a Daft read or from_* before the run "
                "chose it): call daft.set_runner_ray() before building DataFrames, or run in a new process"
            )
        yield cluster_mod.from_ray_nodes(ray.nodes())


# ---------------------------------------------------------------------------------------------------
# Running


def loads_after_start(pipeline_or_path: Any, runner: str) -> bool:
    """Whether the pipeline loads once the runtime has started: a plain Daft script on Ray.

    Loading a script executes it, and its first read or ``daft.from_*`` fixes Daft's runner for the process
    (``get_or_create_runner``): loaded before Ray, the job ran on the driver's native runner (a join over 300
    small files, 2 × 2 local cluster: a 14.5-15.3 s query, against 7.1-10.1 s on Ray). Other pipelines load
    first, so a broken one is refused before a cluster starts; a script is still checked before it runs.
    """
    from daftscale.script import is_plain_script

    return (
        runner == "ray"
        and isinstance(pipeline_or_path, (str, os.PathLike))
        and is_plain_script(os.fspath(pipeline_or_path))
    )


def _resolve_plan(plan: str | ScalingPlan | None) -> ScalingPlan | None:
    if plan is None or (isinstance(plan, str) and plan == "auto"):
        return None
    if isinstance(plan, ScalingPlan):
        return plan
    return read_plan_file(plan)


def read_plan_file(path: str | os.PathLike[str]) -> ScalingPlan:
    """The plan in a plan JSON file (``daftscale plan --format json``, ``daftscale tune --out``); a missing,
    unreadable, empty or malformed file is a :class:`PlanError` naming the file and the fix."""
    path = os.fspath(path)
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


def output_keeps_rows(pipe: Pipeline) -> bool:
    """True when the pipeline's output has a row for each row at its scaling step (nothing after it filters,
    joins, explodes or aggregates): what a sampled run's rows out can be checked against."""
    scaling = probe(pipe)
    checkable, _note = rows_checkable(scaling.scaling_input, scaling.output)
    return checkable


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
    trials through :meth:`execute` on its session, and calibration runs its samples through it too.

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
        # The Ray actors that measure runs, kept from this session's first run to its end.
        self.instruments: KeptInstruments | None = None

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
        instruments, self.instruments = self.instruments, None
        if instruments is not None:
            instruments.close()  # before the runtime: a local cluster takes its actors with it
        if stack is not None:
            stack.close()

    def execute(
        self,
        pipeline: Pipeline | str | os.PathLike[str],
        *,
        plan: ScalingPlan | SampledPlan | None = None,
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

        A :class:`~daftscale.plan_handle.SampledPlan` runs on its sample of the rows at the scaling step.

        Options are those of :func:`run`, already checked (``max_memory`` in bytes, ``stall_timeout``
        in seconds or None for off, ``output`` from :func:`daftscale.script.prepare_job`). A run that
        did not finish as planned (memory budget, stall, rows lost) raises a :class:`RunError` whose
        ``report`` attribute is the partial report.
        """
        return execute_measured(
            self,
            load_pipeline(pipeline),
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
    script_args: Sequence[str] = (),
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
            (:mod:`daftscale.calibrate`): ``"auto"`` (unless the job is too small to sample),
            ``"off"`` (the formula plan as ``daftscale plan`` makes it), or a budget in seconds.
            Its time counts in ``plan_s`` (and ``calibration_s``) of the report.
        script_args: a plain script's own arguments, its ``sys.argv[1:]`` (as ``python script.py ARGS``).
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

    def load() -> tuple[Pipeline, OutputTarget | None, dict[str, Any]]:
        pipe = load_pipeline(pipeline_or_path, script_args=script_args)
        target = prepare_job(
            pipe,
            output=output,
            output_format=output_format,
            overwrite=overwrite,
            append=append,
            keep_udf_settings=keep_udf_settings,
        )
        return pipe, target, pipe.planner_options(planner_kwargs)

    loaded = None if loads_after_start(pipeline_or_path, runner) else load()

    stopped: RunStopped | None = None
    after_job: PipelineError | None = None
    with session:
        pipe, target, kwargs = loaded or load()
        if isinstance(pipe, ScriptPipeline):
            pipe.continue_after_job = True  # its lines after its terminal action run once the job has (continue_script)
        if given_plan is not None:
            check_plan_fits(given_plan, session.cluster, force=force_plan)
        options: dict[str, Any] = {
            "planner_kwargs": kwargs,
            "progress": progress,
            "console": console,
            "on_error": on_error,
            "check_rows": check_rows,
            "max_memory": budget,
            "stall_timeout": stall_floor,
            "output": target,
        }
        try:
            first_started = time.monotonic()
            try:
                report = session.execute(pipe, plan=given_plan, calibrate=calibrate, **options)
            except RunError as exc:
                if not (exc.out_of_memory and exc.plan_unmeasured and calibrate == "auto"):
                    raise
                failed_s = time.monotonic() - first_started
                report = _measured_after_out_of_memory(session, pipe, exc, failed_s, options)
            try:
                # Inside the session: a collected result lives on its workers until the script reads it.
                continue_script(pipe)
            except PipelineError as exc:
                after_job = exc  # the report is written first: the job itself ran
        except RunStopped as exc:
            stopped = exc  # leave the runtime first: what daftscale started is shut down before we report
        finally:
            stop_script(pipe)
    if stopped is not None:
        if report_path is not None:
            # The directory held no report when the run began (checked above), so this adds, not clobbers.
            stopped.report.write(report_path, overwrite=overwrite)
        raise RunError(stopped.message + (f" (partial report in {report_path})" if report_path else ""))
    if report_path is not None:
        report.write(report_path, overwrite=overwrite)
    if after_job is not None:
        raise after_job
    return report


def _measured_after_out_of_memory(
    session: Session, pipe: Pipeline, error: RunError, failed_s: float, options: dict[str, Any]
) -> RunReport:
    """The run once more, calibrated on a sample, after its plan, made with no sample run, ran out of memory.

    Calibration skips its sample run when the Parquet footers show a balanced input or the job is tiny: Daft's
    default is then kept as it is. The footers know nothing of the model's memory (a GPU's least of all), so
    a batch of Daft's (a whole row group, thousands of rows) may not fit; the first call that tries fails the
    query before anything is written (the output is written whole or not at all). This run measures instead,
    under the largest budget (the cost probe runs a call that runs out of memory again in halves) and says
    why in the calibration's lines, and its ``total_s`` counts the ``failed_s`` of the attempt that failed (what
    the user waited for). An out-of-memory failure of this run is the user's to fix.
    """
    from daftscale.calibrate import MAX_BUDGET_S

    first = error.first_failed_call
    what = f"{first.get('error', 'out of memory')} on a batch of {first.get('rows', '?')} rows"
    why = (
        f"the plan made without a sample run ran out of memory in the run ({what}): calibrated on a sample "
        "and ran again"
    )
    if options.get("progress"):
        (options.get("console") or stderr_console()).print(f"daftscale: {why}")
    report = session.execute(pipe, plan=None, calibrate=MAX_BUDGET_S, **options)
    calibration = report.plan.get("calibration")
    if isinstance(calibration, dict):
        calibration["lines"] = [why, *calibration.get("lines", [])]
    report.failed_attempt_s = round(failed_s, 4)
    report.total_s = round(report.total_s + failed_s, 4)
    return report


__all__ = [
    "RUNNERS",
    "STATUS_MEMORY",
    "STATUS_MEMORY_UNGUARDED",
    "STATUS_OK",
    "STATUS_ROWS",
    "NodeMemorySampler",
    "Session",
    "check_plan_fits",
    "error_line",
    "output_keeps_rows",
    "read_plan_file",
    "resolve_runner",
    "run",
    "runtime",
]
