"""Measured execution of one pipeline on an open runtime: what :meth:`daftscale.run.Session.execute` does.

Owns the run itself (:func:`execute_measured`): plan or calibrate, build the pipeline with its UDFs
instrumented, run the query on a thread (:class:`Execution`) while the main thread shows progress and
watches the memory budget and stalls, then make the :class:`~daftscale.report.RunReport` from the UDF
call records, node memory and the rows out; a run that did not finish as planned raises
:class:`RunStopped` with its partial report. The runtime (native, Ray address, local cluster) is the
session's, in :mod:`daftscale.run`.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from daftscale.config import DEFAULT_STALL_TIMEOUT_S, format_bytes
from daftscale.console import stderr_console
from daftscale.errors import DaftscaleError, RunError
from daftscale.gpu import prepare_driver_cuda
from daftscale.health import MeasurementHealth
from daftscale.memory import NodeMemorySampler, host_raylets
from daftscale.output import OutputTarget, WriteResult, count_partitions, discard_staging, output_summary, write_output
from daftscale.pipeline import Pipeline, Probe, build_with, probe, reading_files
from daftscale.plan import ScalingPlan, read_merge, with_read_merge, with_sized_aggregations
from daftscale.plan_handle import PlanHandle, SampledPlan, parquet_head
from daftscale.report import RunReport
from daftscale.scaling_plan import plan_operators
from daftscale.script import ScriptPipeline
from daftscale.udf import Instrumented, RayCollector, SpoolCollector, make_collector, recording
from daftscale.watchdog import STATUS_STALLED, StallWatch, bounded_prep, combine, stop_stalled_query

# What counting the input is called in the notices and errors of bounded_prep.
COUNTING = "counting the rows at the scaling step"

if TYPE_CHECKING:
    from daftscale.cluster import ClusterSpec
    from daftscale.profile import DataProfile
    from daftscale.run import Session

# How often the progress line polls the UDF call records.
PROGRESS_INTERVAL_S = 0.5

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


def operators_added(scaling_input: Any, output: Any) -> Counter[str]:
    """The operators the pipeline adds after the scaling step (read from Daft's plan text; raises if unreadable)."""
    return Counter(plan_operators(output)) - Counter(plan_operators(scaling_input))


def rows_checkable(scaling_input: Any, output: Any) -> tuple[bool, str | None]:
    """``(check, note)``: check is True when only row-preserving operators follow the scaling step (see
    ROW_PRESERVING_OPS). ``note`` says why the check is off when that was not the pipeline's doing: Daft's
    plan text could not be read, so the check the run promises by default would be off without a word."""

    try:
        added = operators_added(scaling_input, output)
    except Exception as exc:  # a Daft without this private API: do not guess, say so
        return False, (
            f"the rows-in = rows-out check is off: Daft's plan text could not be read ({type(exc).__name__}: {exc}"[
                :200
            ]
            + "); pass --check-rows to check anyway"
        )
    return set(added) <= ROW_PRESERVING_OPS, None


def aggregates_after_step(scaling_input: Any, output: Any) -> bool:
    """Whether the pipeline groups rows after the scaling step (a groupby, an aggregate over all rows).

    Read from Daft's plan text: False when it cannot be read, and the pipeline runs with Daft's setting.
    """
    try:
        return operators_added(scaling_input, output)["Aggregate"] > 0
    except Exception:
        return False


def repartitioned_before_a_limit(plan: ScalingPlan, scaling_input: Any, output: Any) -> ScalingPlan:
    """``plan`` with ``repartition`` for its ``into_partitions`` when the pipeline limits its rows after the
    scaling step: Daft 0.7.26's Ray runner never finishes ``into_partitions`` followed by a ``limit`` (measured on
    a 2 × 2 local cluster: ``read_parquet → into_partitions(4) → limit(20) → write_parquet`` still running after
    40 s, where ``repartition(4)``, ``into_batches`` and no step finished in about 3 s), as it never finishes one
    after a ``limit`` (:meth:`ScalingPlan.apply`). Unchanged when Daft's plan text cannot be read."""
    if plan.partition_op != "into_partitions" or plan.partition_keys or scaling_input is None or output is None:
        return plan
    try:
        limited = operators_added(scaling_input, output)["Limit"] > 0
    except Exception:
        return plan
    return replace(plan, partition_op="repartition") if limited else plan


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


class RunStopped(RunError):
    """A run that did not finish as planned: carries the partial report to write and the one-line reason.

    A ``RunError``, so a caller of :meth:`Session.execute` other than :func:`run` (the tuner's trials,
    calibration's samples) sees a stalled or short run as the run's failure, in one line.
    """

    def __init__(self, report: RunReport, message: str) -> None:
        super().__init__(message)
        self.report = report
        self.message = message


class Execution(threading.Thread):
    """Executes the DataFrame off the main thread so the main thread can show progress and take Ctrl-C.

    With an ``output`` target the rows are written there (staged, then moved into place whole) and
    counted from the written files; without one they are counted where they are and dropped
    (:mod:`daftscale.output`). Either way no partition's data is moved to the driver to be counted.
    """

    def __init__(
        self, df: Any, execution_config: dict[str, Any], output: OutputTarget | None = None, *, keep: bool = False
    ) -> None:
        super().__init__(name="daftscale-run", daemon=True)
        self.df = df
        self.execution_config = execution_config
        self.output = output
        # Collect the rows where they are (in place, as df.collect() does) for a script that goes on to use them.
        self.keep = keep
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
                if self.output is None and self.keep:
                    # The rows stay on the workers (Ray's object store) until the script reads them; a collect
                    # cannot stop between partitions, so a stop waits for it, as a write's does.
                    self.df.collect()
                    self.rows, self.partitions = len(self.df), collected_partitions(self.df)
                elif self.output is None:
                    count_partitions(self.df, self.stop_requested, self._count)
                else:
                    self.written = write_output(self.df, self.output)
                    self.rows, self.partitions = self.written.rows, len(self.written.files)
        except BaseException as exc:
            self.error = exc
        finally:
            self.finished_at = time.time()


def collected_partitions(df: Any) -> int:
    """Partitions of a collected DataFrame: its result set's (Daft 0.7.26's ``num_partitions()`` says 0 for a
    collected DataFrame on Ray), or 0 when it cannot be read."""
    result = getattr(df, "_result", None)
    try:
        return int(result.num_partitions()) if result is not None else int(df.num_partitions() or 0)
    except Exception:
        return 0


class KeptInstruments:
    """The Ray actors that measure a session's runs (the UDF call collector and a memory sampler per
    node), started by its first run and kept for the rest: calibration's sample runs, the run itself,
    the tuner's trials. Each Ray actor costs a worker process; on a 2-core, 4-node local cluster the five
    of them delayed a 2-actor sample run's first batch by 1.6-2.1 s, every run. :meth:`close` ends them
    (the session does, before its runtime goes).
    """

    def __init__(self) -> None:
        collector = make_collector("ray")
        assert isinstance(collector, RayCollector)
        self.collector: RayCollector = collector
        self.sampler = NodeMemorySampler("ray", keep=True)

    def close(self) -> None:
        self.sampler.close()
        self.collector.close()


def _instruments(session: Session) -> tuple[KeptInstruments | None, dict[str, int] | None]:
    """How this run is measured: ``(kept instruments, raylets on this host)``.

    On a Ray cluster that spans hosts, the session's kept instruments (Ray actors), started now if this
    is its first run; a kept collector that no longer answers is replaced (a kept sampler replaces a
    silent node's by itself). On the native runner, and on a Ray cluster whose nodes all run on this host
    (the raylets, by node: :func:`host_raylets`), nothing is kept: the run's collector (a directory) and
    samplers (threads) cost nothing to make, and no Ray worker process competes with the query's."""
    if session.runner != "ray":
        return None, None
    raylets = host_raylets()
    if raylets is not None:
        return None, raylets
    kept = session.instruments
    if kept is not None and not kept.collector.answers():
        # Its node died, say: a run whose records cannot be read reports nothing, so start another.
        kept.close()
        kept = None
    if kept is None:
        kept = session.instruments = KeptInstruments()
    return kept, None


def execute_measured(
    session: Session,
    pipe: Pipeline,
    given_plan: ScalingPlan | SampledPlan | None,
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
    """Plan (unless ``given_plan``), run and measure ``pipe`` on ``session``'s runtime: :meth:`Session.execute`.

    A :class:`SampledPlan` runs its plan on its sample (calibration's and the tuner's runs).

    With no plan, the pipeline's DataFrame is profiled at the scaling step and planned for the session's
    cluster, calibrated on samples run through ``session.execute`` when ``calibrate`` asks for it. The
    query runs on a thread (:class:`Execution`) while this one shows progress and checks the memory
    budget and the stall watchdog; the UDF call records, node memory and the rows out make the report.
    A run that did not finish as planned raises :class:`RunStopped` with its partial report.
    """
    import daft

    from daftscale.calibrate import calibrated_plan
    from daftscale.profile import footer_rows, profile_dataframe

    runner, cluster = session.runner, session.cluster
    started = time.time()
    # Started before profiling and calibration, so on a cluster of several hosts the measuring actors'
    # processes start while those run.
    kept, raylets = _instruments(session)
    scaling = probe(pipe)
    notices = (console or stderr_console()).print

    def guarded(work: Callable[[], Any], what: str) -> Any:
        # Profiling and counting are queries with no UDF progress to watch: bounded, and never silent.
        return bounded_prep(work, what=what, floor_s=stall_timeout, say=notices)

    if given_plan is None:
        # A read of many small files before a join (or anything else) ahead of the scaling step: its files are
        # read in merged tasks by the profile's queries, the sample runs and the run alike (the plan's own
        # read is merged by plan()). Measured on a join over 300 small files (2 × 2 local cluster): the
        # profile's count took 1.7-3.1 s with one task per file, 0.2-0.3 s merged.
        reads = [] if calibrate == "off" else guarded(lambda: reads_before_step(scaling), READING_FOOTERS)
        largest = max(reads, key=lambda read: read[1].files, default=None)
        joined = largest[1] if largest is not None else None
        merge = read_merge(joined, cluster) if joined is not None else None
        with daft.execution_config_ctx(**(merge[0] if merge else {})):
            data = guarded(
                lambda: profile_dataframe(
                    scaling.scaling_input,
                    parquet_paths=scaling.parquet_paths,
                    read_profiles=[profile for _paths, profile in reads],
                    text_paths=scaling.text_read_paths,
                ),
                "profiling the DataFrame at the scaling step (a row count and a sample)",
            )
        rows_in = data.rows

        def run_sample(sampled: SampledPlan) -> RunReport:
            # A calibration run: the same runtime, the pipeline's instrumented UDFs, a sample of the rows.
            return session.execute(
                pipe,
                plan=sampled,
                planner_kwargs=planner_kwargs,
                progress=False,
                on_error=on_error,
                check_rows=False,
                stall_timeout=stall_timeout,  # a sample run that stalls is stopped like the run itself
            )

        if largest is not None:
            run_sample = _sampling_joined_read(run_sample, *largest, data.rows, cluster)
        say = (console or stderr_console()).print if progress else (lambda _text: None)
        chosen = calibrated_plan(
            data,
            cluster,
            scaling.planner_options(planner_kwargs),
            runner=runner,
            calibrate=calibrate,
            run_sample=run_sample,
            scaling_input=scaling.scaling_input,
            output=scaling.output,
            say=say,
            udfs_timed=timed_udfs(pipe),
            script_batch_size=pipe.script_batch_size if isinstance(pipe, ScriptPipeline) else None,
        )
        if joined is not None:
            chosen = with_read_merge(chosen, joined, cluster)
        # Not under --calibrate off, which runs the plan exactly as `daftscale plan` makes it.
        if runner == "ray" and calibrate != "off" and aggregates_after_step(scaling.scaling_input, scaling.output):
            chosen = with_sized_aggregations(chosen, data, cluster)
        chosen = repartitioned_before_a_limit(chosen, scaling.scaling_input, scaling.output)
        handle = PlanHandle(chosen)
    elif isinstance(given_plan, SampledPlan):
        given_plan = replace(
            given_plan, plan=repartitioned_before_a_limit(given_plan.plan, scaling.scaling_input, scaling.output)
        )
        # A sampled plan (calibration, tune) runs about sample_rows rows: no need to count the whole input.
        rows_in = given_plan.sample_rows or guarded(lambda: count_rows(scaling.scaling_input), COUNTING)
        head = None
        if given_plan.fraction is None and given_plan.read_paths is None:
            head = parquet_head(scaling.scaling_input, scaling.parquet_paths, given_plan.sample_rows)
            rows_in = head.count_rows() if head is not None else rows_in  # the files may hold fewer
        chosen, handle = given_plan.plan, given_plan.handle(head)
    else:
        rows_in = footer_rows(scaling.scaling_input, scaling.parquet_paths) or guarded(
            lambda: count_rows(scaling.scaling_input), COUNTING
        )
        chosen = repartitioned_before_a_limit(given_plan, scaling.scaling_input, scaling.output)
        handle = PlanHandle(chosen)

    collector: SpoolCollector | RayCollector
    if kept is None:
        collector = make_collector(runner, host_local=raylets is not None)
    else:
        collector = kept.collector
        kept.collector.restart()
    halve_out_of_memory = isinstance(given_plan, SampledPlan) and given_plan.halve_out_of_memory
    sink = {**collector.sink, "on_error": on_error, "halve_out_of_memory": halve_out_of_memory}
    sampler: NodeMemorySampler | None = None
    execution: Execution | None = None
    try:
        read_paths, read_files = (
            (given_plan.read_paths, given_plan.read_files) if isinstance(given_plan, SampledPlan) else (None, ())
        )
        # The run itself (not a calibration sample) of a plain script run() goes on with: the build pauses the
        # script at its action, to go on from there once the job's result is in (ScriptPipeline).
        final = not isinstance(given_plan, SampledPlan)
        script = pipe if final and isinstance(pipe, ScriptPipeline) and pipe.continue_after_job else None
        if script is not None:
            script.pause_next_build()
        with recording(sink) as instrumented, reading_files(read_paths, read_files) as substituted:
            df = build_with(pipe, handle)
        if read_paths is not None and not substituted:
            # The build did not read those paths as the probe saw (a read made another way): a limit, not the
            # whole input, is the sample.
            assert isinstance(given_plan, SampledPlan)
            handle = replace(given_plan, read_paths=None).handle()
            with recording(sink) as instrumented:
                df = build_with(pipe, handle)
        rows_note = None
        if check_rows is None:
            check_rows, rows_note = rows_checkable(scaling.scaling_input, df)
        prepare_driver_cuda(chosen.udf_gpus, runner)  # on the main thread, before Daft's threads touch CUDA
        if kept is None:
            sampler = NodeMemorySampler(runner, raylets=raylets)
        else:
            sampler = kept.sampler
            sampler.restart()
        run_start = time.time()
        # A script that goes on with its rows gets them collected; a show() computes its own preview (Daft's show,
        # in order: a collected result's first rows can come out of order on Daft 0.7.26's Ray runner after a sort).
        keep = script is not None and output is None and script.paused_action != "show"
        execution = Execution(df, chosen.execution_config, output, keep=keep)
        execution.start()
        stall = stall_watch(collector, stall_timeout, instrumented, chosen, execution)
        memory_watch = MemoryWatch(sampler, max_memory) if max_memory else None
        watch = combine(memory_watch, stall)
        reason = wait_with_progress(
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
            raised = failed if on_error in (None, "raise") else []
            finished = _merge_calls(collector)[0]  # what did run: calibration reads a UDF's memory from it
            failure = RunError(_failure_message(error, raised), failed_calls=raised, calls=finished)
            failure.plan_unmeasured = given_plan is None and bool((chosen.calibration or {}).get("skipped"))
            raise failure from error
        # Read once more now the query is over (the first read may have missed the last records).
        records_error = _snapshot_error(collector)
        calls, _ = _merge_calls(collector) if records_error is None else ([], [])
        failed = list(collector.failed) if records_error is None else failed
        ready, halved = list(collector.ready), list(collector.halved)
        health = MeasurementHealth(
            records_error=records_error,
            events=list(collector.events),
            query_finished=reason is None,
            rows_in=rows_in,
            rows_checked=bool(check_rows),
            rows_check_note=rows_note,
            memory_unmeasured=memory_unmeasured,
            memory_missed=memory_missed,
            udfs_timed=len(instrumented),
        )
    except BaseException:
        if execution is not None:
            # Ctrl-C or an error while waiting: let the query stop between partitions.
            execution.stop_requested.set()
        raise
    finally:
        if sampler is not None:
            sampler.stop()
        if kept is None:
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
        halved_calls=halved,
        ready=ready,
        calibrated=given_plan is None,
    )
    if execution.written is not None:
        report.output = output_summary(output, execution.written)
    if script is not None:
        script.job_result = execution.written if output is not None else df
    health.apply(report)
    if reason is not None:
        if stalled:
            report.status = STATUS_STALLED
            report.stall = stall.state()  # type: ignore[union-attr]
        else:
            report.status = getattr(memory_watch, "status", STATUS_MEMORY)
        raise RunStopped(report, f"{reason}: stopped the run after {execution.rows:,} of {rows_in:,} rows")
    if check_rows and report.rows_out != report.rows_in:
        report.status = STATUS_ROWS
        raise RunStopped(
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
    return f"the pipeline failed while running: {error_line(error)}: fix that cause and run again"


# Checks of the wait loop (one per PROGRESS_INTERVAL_S) a node may go without a new memory sample, or the
# samplers without answering, before --max-memory is taken as not enforced: a few seconds, longer than a
# slow sample or a busy Ray scheduler, far shorter than the runs a budget guards.
UNGUARDED_CHECKS = 8


class MemoryWatch:
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


def timed_udfs(pipe: Pipeline) -> bool:
    """Whether the pipeline's UDFs report their calls: a plain script knows its actor UDFs (only a sync batch
    method is timed); a pipeline file's are made as it builds (its actor UDFs are)."""
    return not isinstance(pipe, ScriptPipeline) or any(udf.timed for udf in pipe.udfs)


def stall_watch(
    collector: Any, floor_s: float | None, instrumented: Instrumented, plan: ScalingPlan, execution: Execution
) -> StallWatch | None:
    """The stall watchdog for this run, when it is on and some UDF reports its calls or its progress (only they
    show progress)."""
    if floor_s is None or not instrumented.watched:
        return None
    return StallWatch(
        collector,
        floor_s,
        started=time.time(),
        concurrency=plan.concurrency,
        rows_out=lambda: execution.rows,
        gpus=plan.udf_gpus,
    )


READING_FOOTERS = "reading the Parquet footers of the files read before the scaling step"


def reads_before_step(scaling: Probe) -> list[tuple[list[str], DataProfile]]:
    """The footers' profiles of the Parquet reads before the scaling step, in the order the pipeline made them,
    when the scaling input is not a read itself (a join, a filter or an explode comes between: its profile is
    not the footers', and the plan is not made from a read's files); else none.

    Daft's scan-task merge settings apply to every read of a query, so the run sizes them by the read with
    the most files (:func:`daftscale.plan.with_read_merge`).
    """
    from daftscale.errors import ProfileError
    from daftscale.profile import is_plain_read, profile_parquet

    if not scaling.parquet_reads or (scaling.parquet_paths and is_plain_read(scaling.scaling_input)):
        return []
    reads = []
    for paths in scaling.parquet_reads:
        try:
            reads.append((paths, profile_parquet(paths)))
        except ProfileError:
            continue  # a store pyarrow cannot reach the way Daft does: that read keeps Daft's default
    return reads


def _sampling_joined_read(
    run_sample: Callable[[SampledPlan], RunReport],
    paths: list[str],
    read: DataProfile,
    rows_at_step: int,
    cluster: ClusterSpec,
) -> Callable[[SampledPlan], RunReport]:
    """``run_sample`` with ``read``'s files merged as the run merges them (:func:`daftscale.plan.with_read_merge`),
    and each head sample taken by files: files spread over the read (:func:`spread_files`), not ``df.limit``.

    Why: a limit after a join still runs the join over every file, and Daft's Ray runner runs a limit with a
    counter actor of its own. Measured over a join of 300 small files (2 × 2 local cluster, the same 2-actor
    model and groupby after it): 2.5-3.5 s with ``limit(1400)`` at the step, 1.8-2.2 s reading the first
    file (2,500 rows), 0.9-1.1 s reading 4 small files.
    """

    def run(sampled: SampledPlan) -> RunReport:
        sampled = replace(sampled, plan=with_read_merge(sampled.plan, read, cluster))
        if sampled.fraction is None:
            spread = spread_files(paths, read, rows_at_step, sampled.sample_rows)
            if spread is not None:
                files, rows = spread
                sampled = replace(sampled, sample_rows=rows, read_paths=tuple(paths), read_files=tuple(files))
        return run_sample(sampled)

    return run


def spread_files(
    paths: list[str], read: DataProfile, rows_at_step: int, sample_rows: int
) -> tuple[list[str], int] | None:
    """Files spread evenly over ``read``'s listing (every n-th) whose rows reach about ``sample_rows`` rows at the
    scaling step (rows read times the step's rows per row read), and those rows at the step.

    Spread, not the first files: listings are often sorted by size or date, and Daft's default hands the UDF one
    piece per file (a join over 300 power-law files, largest first: the first file alone was 2,500 rows in one
    call, where the run's calls averaged 93 rows). None when files cannot stand in for ``df.limit``: a store's
    URI (Daft and pyarrow name its files differently), files not as the footers listed them, or the whole read.

    >>> from daftscale.profile import DataProfile
    >>> read = DataProfile(source="x", rows=100, bytes_per_row=1.0, files=4, file_rows=(70, 10, 10, 10))
    >>> spread_files(["a", "b", "c", "d"], read, 100, 15) is None  # not found on disk
    True
    """
    from daftscale.errors import ProfileError
    from daftscale.profile import list_parquet_files

    if any("://" in path for path in paths) or not read.rows or sample_rows < 1:
        return None
    try:
        _fs, files = list_parquet_files(paths)
    except ProfileError:
        return None
    chosen = spread_indices(read.file_rows, rows_at_step / read.rows, sample_rows)
    if chosen is None or len(files) != len(read.file_rows):
        return None
    indices, rows = chosen
    return [files[i] for i in indices], rows


def spread_indices(file_rows: tuple[int, ...], per_row_read: float, sample_rows: int) -> tuple[list[int], int] | None:
    """The fewest evenly spread files (indices) whose rows times ``per_row_read`` reach ``sample_rows``, and
    those rows at the step; None when only all of them do.

    >>> spread_indices((70, 10, 10, 10, 10, 10, 10, 10, 10, 10), 1.0, 20)
    ([2, 7], 20)
    >>> spread_indices((10,) * 10, 1.0, 35)
    ([1, 3, 6, 8], 40)
    >>> spread_indices((10,) * 10, 1.0, 95) is None
    True
    """
    files = len(file_rows)
    total = sum(file_rows)
    if files < 2 or total * per_row_read <= 0:
        return None
    count = max(1, math.ceil(files * min(1.0, sample_rows / (total * per_row_read))))
    while count < files:
        # Each from the middle of its stretch of the listing: the ends are where sorted listings put outliers.
        indices = [(2 * i + 1) * files // (2 * count) for i in range(count)]
        rows = round(sum(file_rows[i] for i in indices) * per_row_read)
        if rows >= sample_rows:
            return indices, max(1, rows)
        count = max(count + 1, math.ceil(count * 1.25))
    return None


def count_rows(df: Any) -> int:
    """The DataFrame's rows (``count_rows``), as a RunError naming the step when Daft cannot count them."""
    try:
        return int(df.count_rows())
    except Exception as exc:
        raise RunError(f"could not count the rows at the scaling step: {exc}: check the pipeline's source") from exc


def wait_with_progress(
    execution: Execution,
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


__all__ = [
    "PROGRESS_INTERVAL_S",
    "ROW_PRESERVING_OPS",
    "STALL_GRACE_S",
    "STATUS_MEMORY",
    "STATUS_MEMORY_UNGUARDED",
    "STATUS_OK",
    "STATUS_ROWS",
    "STOP_GRACE_S",
    "UNGUARDED_CHECKS",
    "Execution",
    "MemoryWatch",
    "RunStopped",
    "count_rows",
    "error_line",
    "execute_measured",
    "rows_checkable",
    "stall_watch",
    "wait_with_progress",
]
