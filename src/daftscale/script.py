"""Plain Daft scripts under ``daftscale run``: the script runs as it is, with the scaling step put in for it.

A plain script never imports daftscale: it reads (``daft.read_parquet``...), declares its model as a
``@daft.cls`` class with a ``@daft.method.batch`` method, and ends in one terminal action
(``df.write_parquet(OUT)``, ``collect()``, ``show()``...), often after ``daft.set_runner_ray()``.
:class:`ScriptPipeline` makes such a file a :class:`~daftscale.pipeline.Pipeline` by executing it
(``runpy``, as ``__main__``) inside :func:`_intercepting`, which patches Daft's public entry points
for the length of the execution and restores them in ``finally``:

- reads (``daft.read_*``, ``daft.from_*``) return ``plan.apply(the read)``: the scaling step goes
  right after the script's read, or, when it reads several sources (a join), after its Parquet read of
  the most files (else its first read), the input a join of small tables fans out from;
- actor UDF calls (``Func.__call__`` on a ``@daft.cls`` method given expressions) get the plan's
  concurrency, batch size and resources (unless ``--keep-udf-settings``), and their batches are
  timed with the same recorder as :func:`daftscale.udf.actor_udf`;
- ``daft.set_runner_ray()`` / ``set_runner_native()`` do nothing: the run's runtime is daftscale's;
- the script's first terminal action (``df.write_parquet(OUT)``, ``collect()``, ``show()``, ``to_pylist()``...)
  is its job: daftscale runs it, and writes the script's output (:mod:`daftscale.output`) whole or not at all.

The script is executed once when loaded (to find its read, UDFs and action; it stops at the action), once per
calibration sample (stopping there too), and once for the run: that execution pauses at the action on a thread
of its own (:class:`Pause`) while daftscale runs and measures the job, then goes on as under python, the action
returning what Daft's would (the written paths, the collected rows, a ``show()``'s table) and the lines after it
running with Daft's entry points as Daft has them (:func:`continue_script`): a ``print(len(df))``, a
``json.dump(df.to_pylist())``, a read-back of the output, a second write of the collected rows. Those lines run
inside the run's session (collected rows live on its workers), once. Module-level code before the action
(prints, making input data) runs on every execution.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import runpy
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from daftscale.errors import ConfigError, PipelineError
from daftscale.output import OutputTarget, check_target, resolve_output
from daftscale.pipeline import Pipeline

if TYPE_CHECKING:
    from daftscale.plan_handle import PlanHandle

# Daft functions that make a DataFrame from data: the scaling step goes after the one a script calls.
SOURCE_FUNCTIONS = (
    "read_parquet",
    "read_csv",
    "read_json",
    "read_text",
    "read_blob",
    "read_warc",
    "read_lance",
    "read_deltalake",
    "read_iceberg",
    "read_hudi",
    "read_paimon",
    "read_sql",
    "read_huggingface",
    "read_webdataset",
    "read_video_frames",
    "read_mcap",
    "read_generator",
    "from_glob_path",
    "from_files",
    "from_pydict",
    "from_pylist",
    "from_arrow",
    "from_pandas",
    "range",
)

# Where Daft exposes those functions and the runner set-up; each name is patched wherever it is found.
DAFT_MODULES = ("daft", "daft.io", "daft.convert", "daft.runners", "daft.context")

RUNNER_FUNCTIONS = ("set_runner_ray", "set_runner_native")

# Writes daftscale stages and renames into place (the format is the method's suffix).
STAGED_WRITES = ("write_parquet", "write_csv", "write_json")

# Writes daftscale cannot stage (tables, databases, vector stores): refused with the reason.
OTHER_WRITES = (
    "write_lance",
    "write_iceberg",
    "write_deltalake",
    "write_paimon",
    "write_sql",
    "write_sink",
    "write_turbopuffer",
    "write_clickhouse",
    "write_huggingface",
    "write_bigtable",
)

# Actions that execute the whole DataFrame and hand back the DataFrame (collect) or nothing (show).
KEEPING_ACTIONS = ("collect", "show")

# Actions that return the rows (or their count) to the rest of the script.
DATA_ACTIONS = (
    "to_pandas",
    "to_pydict",
    "to_pylist",
    "to_arrow",
    "to_arrow_iter",
    "iter_rows",
    "iter_partitions",
    "count_rows",
    "__iter__",
)


@dataclass
class Action:
    """A terminal action the script called, where, and with what."""

    name: str
    df: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    where: str

    def describe(self) -> str:
        return f"{self.name}() at {self.where}"


@dataclass
class UdfUse:
    """An actor UDF the script applied, with the settings its author gave."""

    name: str
    batch_size: int | None
    max_concurrency: int | None
    cpus: float | None
    gpus: float
    is_batch: bool
    where: str
    is_async: bool = False
    is_generator: bool = False

    @property
    def timed(self) -> bool:
        """Whether daftscale times its calls one by one (:func:`timed_method`)."""
        return timed_method(self)


def timed_method(method: Any) -> bool:
    """Whether daftscale times a ``@daft.cls`` method's calls one by one (a Daft ``Func`` or a :class:`UdfUse`): a
    sync batch method. A row-wise one (a record per row would cost more than the row) or an async one (its calls
    overlap) is watched instead (:class:`WatchedInstance`); a generator is left as it is."""
    return bool(method.is_batch) and not method.is_async and not method.is_generator


@dataclass
class ScriptPass:
    """What one execution of the script did (read, UDFs, runner calls, actions)."""

    reads: list[tuple[str, Any, str]] = field(default_factory=list)  # (function, DataFrame, where)
    read_args: list[Any] = field(default_factory=list)  # each read's first argument (its paths), or None
    udfs: list[UdfUse] = field(default_factory=list)
    runner_calls: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    depth: int = 0  # reads in progress: a read that calls another is one read
    # The run's own execution only: where the script waits at its terminal action while daftscale runs the job.
    pause: Pause | None = None
    # Restores Daft's entry points but the runner set-up (set by _intercepting), so the rest runs as under python.
    release: Any = None


class _ScriptStopped(BaseException):
    """Raised inside the script at its terminal action when only its DataFrame is wanted (loading, a calibration
    sample), or when the run ended without a result to hand it."""


class Pause:
    """The script's run, waiting at its terminal action on its own thread while daftscale runs the job.

    :meth:`hand_over` is called at the action (on the script's thread): it hands the action to the run, waits,
    and returns what the action returns under python (the written paths, the collected DataFrame, its rows...),
    computed from the job's result; the rest of the script then runs with Daft's entry points as Daft has them.
    :meth:`resume` (the run's thread) gives it the result, :meth:`stop` ends the script there instead.
    """

    def __init__(self) -> None:
        self.action: Action | None = None
        self.reached = threading.Event()  # the action was reached, or the script ended first
        self._go = threading.Event()
        self._result: Any = None
        self._stopped = False
        self.resumed = False

    def hand_over(self, action: Action, original: Any, release: Any) -> Any:
        self.action = action
        release()  # the job runs on the run's thread now: Daft's entry points must be its own again
        self.reached.set()
        self._go.wait()
        if self._stopped:
            raise _ScriptStopped()
        self.resumed = True
        if action.name.startswith("write_"):
            import daft

            return daft.from_pydict({"path": list(self._result.files)})  # what Daft's write hands back
        # The job collected the action's DataFrame in place (collect() does), so this reads its result; a show()
        # computes its preview as Daft's does (the job counted its rows without keeping them).
        return original(action.df, *action.args, **action.kwargs)

    def resume(self, result: Any) -> None:
        self._result = result
        self._go.set()

    def stop(self) -> None:
        self._stopped = True
        self._go.set()


def is_plain_script(path: str) -> bool:
    """True for a Daft job: a file that reads or runs a DataFrame (``daft.read_*``, ``write_parquet``,
    ``collect``...), does not import daftscale and defines no ``build`` function (a pipeline file).

    A file with none of these goes to the pipeline loader, whose errors say what a pipeline needs.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=path)
    except (OSError, UnicodeDecodeError, SyntaxError):
        return False  # let the pipeline loader report the problem as it always has
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "daftscale" for a in node.names):
            return False
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "daftscale":
            return False
    if any(isinstance(n, ast.FunctionDef) and n.name == "build" for n in tree.body):
        return False
    job_names = {n for n in (*SOURCE_FUNCTIONS, *STAGED_WRITES, *OTHER_WRITES, *KEEPING_ACTIONS, *DATA_ACTIONS)}
    job_names -= {"range", "__iter__"}  # builtins' names: only daft.range counts
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (node.attr in job_names or (node.attr == "range" and _is_daft(node))):
            return True
        if isinstance(node, ast.Name) and node.id in job_names:
            return True
    return False


def _is_daft(node: ast.Attribute) -> bool:
    return isinstance(node.value, ast.Name) and node.value.id == "daft"


# ---------------------------------------------------------------------------------------------------
# The script as a pipeline


class ScriptPipeline(Pipeline):
    """A plain Daft script, run by daftscale as a pipeline whose scaling step follows the script's read.

    Loading executes the script once with nothing changed but its actions recorded (see the module
    docstring), so a script daftscale cannot run is refused before a cluster starts.
    """

    def __init__(self, path: str, script_args: Sequence[str] = ()) -> None:
        super().__init__(self._build, name=os.path.basename(path))
        self.source = os.path.abspath(path)
        self.keep_udf_settings = False
        self.script_args = tuple(str(arg) for arg in script_args)  # its sys.argv[1:], as `python path ARGS`
        # The run's own build pauses the script at its action (pause_next_build), and run() lets it go on after.
        self._pause_next = False
        self._paused: tuple[Pause, threading.Thread, dict[str, Any]] | None = None
        # Set by run(): its own run pauses the script at the action and goes on after (continue_script).
        self.continue_after_job = False
        self.job_result: Any = None  # what the run's job gave the action (execute_measured)
        self.first = self._execute(None)
        self.action = _check_pass(self.first, self.source)
        self.step_read = scaling_read(self.first)
        self.output = _script_target(self.action)
        self.udfs = self.first.udfs
        if self.udfs:
            # The author's resources are what the model needs (a GPU model on a GPU): plan with them unless
            # --udf-cpus/--udf-gpus say otherwise. Concurrency and batch size are the planner's to choose.
            from daftscale.plan import UdfResources

            first = self.udfs[0]
            self.planner_kwargs["udf"] = UdfResources.of(cpus=first.cpus, gpus=first.gpus)
            if len(self.udfs) > 1:
                # Each model gets the plan's concurrency, and their pools run at once: the plan divides the
                # cluster among them (two models of 4 actors each on 4 CPUs waited 120 s for actors, then failed).
                self.planner_kwargs["models"] = len(self.udfs)

    @property
    def script_batch_size(self) -> int | None:
        """The batch size the script's timed UDFs declare (one, shared by all), which Daft's default runs them
        with; None when they declare none or differ."""
        sizes = {udf.batch_size for udf in self.udfs if udf.timed}
        return sizes.pop() if len(sizes) == 1 else None

    def keep_author_settings(self) -> None:
        """Run each UDF with its author's concurrency and batch size, and plan around the first one's."""
        self.keep_udf_settings = True
        # Each model runs with its author's concurrency and resources, not a share the plan divides.
        self.planner_kwargs.pop("models", None)
        if self.udfs:
            first = self.udfs[0]
            if first.max_concurrency is not None:
                self.planner_kwargs["concurrency"] = first.max_concurrency
            if first.batch_size is not None:
                self.planner_kwargs["batch_size"] = first.batch_size

    def _build(self, plan: PlanHandle) -> Any:
        if plan.probing:
            # The probe's handle only records what reaches the scaling step: the load-time
            # execution already built exactly that, so the script is not executed a third time.
            from daftscale.pipeline import note_file_read

            name, df, _where = self.first.reads[self.step_read]
            note_file_read(name, self.first.read_args[self.step_read])  # so its files can profile it
            plan.apply(df)
            return self.action.df
        if self._pause_next:
            self._pause_next = False
            return self._build_paused(plan)
        done = self._execute(plan)
        return self._same_action(_check_pass(done, self.source)).df

    def _same_action(self, action: Action) -> Action:
        if action.name != self.action.name:
            raise PipelineError(
                f"{self.source} ended in {action.describe()} the second time it ran, but in "
                f"{self.action.describe()} the first: keep the script's flow the same on every run"
            )
        return action

    # -- the run itself: the script waits at its action, then goes on with the job's result ---------------

    def pause_next_build(self) -> None:
        """Make the next build (the run's own, not a calibration sample's) pause the script at its terminal
        action on a thread of its own; :meth:`finish_after_job` or :meth:`stop_paused` then ends it."""
        self._pause_next = True

    def _build_paused(self, plan: PlanHandle) -> Any:
        self.stop_paused()
        pause, record, outcome = Pause(), ScriptPass(), {}

        def execute() -> None:
            try:
                self._execute(plan, record, pause)
            except BaseException as exc:  # handed to the run's thread, which reports it
                outcome["error"] = exc
            finally:
                pause.reached.set()

        thread = threading.Thread(target=execute, name="daftscale-script", daemon=True)
        thread.start()
        pause.reached.wait()
        if pause.action is None:  # the script ended, or failed, before its action
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            _check_pass(record, self.source)  # no action: its error
            raise PipelineError(f"{self.source} ended before its terminal action the second time it ran")
        self._paused = (pause, thread, outcome)
        try:
            return self._same_action(_check_pass(record, self.source)).df
        except BaseException:
            self.stop_paused()
            raise

    @property
    def paused_action(self) -> str | None:
        """The name of the terminal action the script waits at (``"show"``...), or None."""
        action = self._paused[0].action if self._paused is not None else None
        return action.name if action is not None else None

    def finish_after_job(self, result: Any) -> bool:
        """Run the rest of the paused script, its action returning what it returns under python, computed from
        ``result`` (the job's :class:`~daftscale.output.WriteResult`, or its collected DataFrame). False when
        no script was paused. A script that fails after its action raises :class:`PipelineError`."""
        if self._paused is None:
            return False
        (pause, thread, outcome), self._paused = self._paused, None
        pause.resume(result)
        while thread.is_alive():  # joined in steps, so Ctrl-C still reaches this thread
            thread.join(0.2)
        if "error" in outcome:
            raise outcome["error"]
        return True

    def stop_paused(self) -> None:
        """End a paused script at its action (the run failed, or has no result to give it): nothing after runs."""
        if self._paused is None:
            return
        (pause, thread, _outcome), self._paused = self._paused, None
        pause.stop()
        thread.join(5.0)

    def _execute(
        self, plan: PlanHandle | None, record: ScriptPass | None = None, pause: Pause | None = None
    ) -> ScriptPass:
        record = record if record is not None else ScriptPass()
        record.pause = pause
        directory = os.path.dirname(self.source)
        saved_argv, saved_path = sys.argv[:], sys.path[:]
        sys.argv = [self.source, *self.script_args]
        # The script's own directory first, as `python script.py` has it, so its sibling imports work.
        sys.path.insert(0, directory)
        try:
            step_read = getattr(self, "step_read", 0)  # the load-time execution applies no step
            with _intercepting(record, plan, self.source, keep=self.keep_udf_settings, step_read=step_read):
                runpy.run_path(self.source, run_name="__main__")
        except _ScriptStopped:
            pass
        except SystemExit as exc:
            if exc.code not in (None, 0):
                if pause is not None and pause.resumed:
                    where, hint = " after daftscale ran its job", ""
                else:
                    where = " while daftscale ran it"
                    hint = "" if self.script_args else " (its arguments go after it: daftscale run SCRIPT -- ARGS)"
                raise PipelineError(
                    f"{self.source} exited with code {exc.code}{where}: run it with python to see why{hint}"
                ) from exc
        except (PipelineError, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if pause is not None and pause.resumed:
                raise PipelineError(
                    f"{self.source} raised {type(exc).__name__}: {exc}{_line_in(exc, self.source)} after "
                    "daftscale ran its job, in the lines after its terminal action (the job's output is complete): "
                    "fix those lines"
                ) from exc
            raise PipelineError(
                f"{self.source} raised {type(exc).__name__}: {exc}{_line_in(exc, self.source)} while daftscale "
                "ran it: fix the script (it must run under python too)"
            ) from exc
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
        return record


def scaling_read(record: ScriptPass) -> int:
    """Which of the script's reads the scaling step follows: the one read, or of several, the Parquet read of
    the most files (the many small files a join fans out from; the first such), else the first read."""
    from daftscale.errors import ProfileError
    from daftscale.pipeline import _as_paths
    from daftscale.profile import list_parquet_files

    if len(record.reads) < 2:
        return 0  # no listing needed (a remote glob can take a while to list)
    best, most = 0, 0
    for index, ((name, _df, _where), given) in enumerate(zip(record.reads, record.read_args, strict=True)):
        paths = _as_paths(given) if name == "read_parquet" else None
        if not paths:
            continue
        try:
            files = len(list_parquet_files(paths)[1])
        except ProfileError:
            files = 1  # a store pyarrow cannot list as Daft does: one read among others
        if files > most:
            best, most = index, files
    return best


def _check_pass(record: ScriptPass, path: str) -> Action:
    """The script's one terminal action; a :class:`PipelineError` for a script daftscale cannot run."""
    name = os.path.basename(path)
    if not record.reads:
        raise PipelineError(
            f"{name} reads no data through daft.read_* or daft.from_*: daftscale puts its scaling step after "
            "the script's read, so make the script read its input with Daft"
        )
    if not record.actions:
        raise PipelineError(
            f"{name} has no terminal action (write_parquet, collect, show...): it builds a DataFrame but never "
            "runs it; end it with df.write_parquet(OUT) (or pass --output OUT)"
        )
    if len(record.actions) > 1:
        where = ", ".join(a.describe() for a in record.actions)
        raise PipelineError(
            f"{name} has {len(record.actions)} terminal actions ({where}): daftscale runs and measures one; "
            "keep the one that runs the job (e.g. remove a debugging show())"
        )
    action = record.actions[0]
    if action.name in OTHER_WRITES:
        raise PipelineError(
            f"{name} ends in {action.describe()}: daftscale writes Parquet, CSV and JSON outputs whole or not at "
            f"all and cannot do that for {action.name} yet; write Parquet (or pass --output DIR)"
        )
    return action


def _script_target(action: Action) -> OutputTarget | None:
    """The output target of the script's own write, with its write mode (if the script gave one)."""
    if action.name not in STAGED_WRITES:
        return None
    params = dict(action.kwargs)
    positional = ("root_dir",) + (("compression", "write_mode") if action.name == "write_parquet" else ("write_mode",))
    for key, value in zip(positional, action.args, strict=False):
        params[key] = value
    if "root_dir" not in params:
        raise PipelineError(f"{action.describe()} gives no directory to write to: pass it one")
    root = os.fspath(params.pop("root_dir"))
    write_mode = params.pop("write_mode", None)
    if write_mode not in (None, "append", "overwrite"):
        raise PipelineError(
            f"{action.describe()} uses write_mode={write_mode!r}: daftscale supports the script's overwrite and "
            "append modes (or --overwrite / --append)"
        )
    if params.get("single_file"):
        raise PipelineError(f"{action.describe()} writes a single file: daftscale stages directories; drop single_file")
    params.pop("single_file", None)
    mode = {"overwrite": "overwrite", "append": "append"}.get(write_mode or "", "error")
    return OutputTarget(root, action.name[len("write_") :], mode, params, origin=action.describe())


def prepare_job(
    pipe: Pipeline,
    *,
    output: str | os.PathLike[str] | None,
    output_format: str | None,
    overwrite: bool,
    append: bool,
    keep_udf_settings: bool,
) -> OutputTarget | None:
    """The run's output target (checked: refused before anything starts), applying the script options."""
    script_target = None
    if isinstance(pipe, ScriptPipeline):
        if keep_udf_settings:
            pipe.keep_author_settings()
        script_target = pipe.output
        if pipe.first.runner_calls:
            where = ", ".join(pipe.first.runner_calls)
            print(f"daftscale: skipped the script's {where}: it runs on daftscale's runner", file=sys.stderr)
    elif keep_udf_settings:
        raise ConfigError(
            "--keep-udf-settings is for plain Daft scripts: a pipeline file sets its own with "
            "@daftscale.pipeline(batch_size=..., concurrency=...)"
        )
    target = resolve_output(script_target, output, output_format, overwrite=overwrite, append=append)
    if target is not None:
        check_target(target)
    return target


# ---------------------------------------------------------------------------------------------------
# Interception


def _where(path: str) -> str | None:
    """``file:line`` of the innermost frame in the script (the call the script made), or None if none is."""
    name = os.path.basename(path)
    for frame in reversed(traceback.extract_stack()):
        if os.path.abspath(frame.filename) == path:
            return f"{name}:{frame.lineno}"
    return None


def _line_in(exc: BaseException, path: str) -> str:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


@contextlib.contextmanager
def _intercepting(
    record: ScriptPass, plan: PlanHandle | None, path: str, *, keep: bool, step_read: int = 0
) -> Iterator[None]:
    """Patch Daft's reads, runner set-up, actor UDF calls and actions for the block; always restored."""
    import importlib

    import daft
    from daft.udf.udf_v2 import Func

    saved: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, name: str, value: Any) -> None:
        saved.append((owner, name, owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)))
        setattr(owner, name, value)

    kept: list[Any] = []  # the runner set-up's patches, which stay until the script ends

    def release() -> None:
        # At the action the job runs on the run's thread, and the rest of the script runs as under python: Daft's
        # entry points are its own again, but the runner set-up, which stays daftscale's.
        for owner, name, value in reversed(saved):
            if (owner, name) not in kept:
                setattr(owner, name, value)

    record.release = release
    try:
        modules = []
        for module_name in DAFT_MODULES:
            with contextlib.suppress(ImportError):
                modules.append(importlib.import_module(module_name))
        for name in SOURCE_FUNCTIONS:
            original = getattr(daft, name, None)
            if original is None:
                continue
            wrapped = _source(original, name, record, plan, path, step_read)
            for module in modules:
                if getattr(module, name, None) is original:
                    patch(module, name, wrapped)
        for name in RUNNER_FUNCTIONS:
            original = getattr(daft, name, None)
            if original is None:
                continue
            skipped = _runner_call(f"daft.{name}", record, path)
            for module in modules:
                if getattr(module, name, None) is original:
                    patch(module, name, skipped)
                    kept.append((module, name))
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            # The run's Ray is up (a script on Ray loads once it is): the script's own ray.init() would fail with
            # "called ray.init twice", where under python it starts or joins the Ray its job runs on.
            patch(ray, "init", _runner_call("ray.init", record, path))
            kept.append((ray, "init"))
        for name in (*STAGED_WRITES, *OTHER_WRITES, *KEEPING_ACTIONS, *DATA_ACTIONS):
            if name in daft.DataFrame.__dict__:
                patch(daft.DataFrame, name, _action(name, record, path, daft.DataFrame.__dict__[name]))
        patch(Func, "__call__", _udf_call(Func.__dict__["__call__"], record, plan, path, keep=keep))
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def _source(original: Any, name: str, record: ScriptPass, plan: PlanHandle | None, path: str, step_read: int) -> Any:
    def read(*args: Any, **kwargs: Any) -> Any:
        where = _where(path)
        record.depth += 1
        try:
            df = original(*args, **kwargs)
        finally:
            record.depth -= 1
        if record.depth or where is None:
            return df  # a read made inside another read, or by a library rather than the script
        record.reads.append((name, df, where))
        record.read_args.append(args[0] if args else kwargs.get("path"))
        # The load-time execution (no plan) leaves the read as it is; the real one puts the step after the
        # scaling read (scaling_read), the others stay as they are.
        if plan is None or len(record.reads) - 1 != step_read:
            return df
        return plan.apply(df)

    return read


def _runner_call(name: str, record: ScriptPass, path: str) -> Any:
    def skipped(*_args: Any, **_kwargs: Any) -> None:
        record.runner_calls.append(f"{name}() at {_where(path) or os.path.basename(path)}")

    return skipped


def _action(name: str, record: ScriptPass, path: str, original: Any) -> Any:
    def act(self: Any, *args: Any, **kwargs: Any) -> Any:
        action = Action(name, self, args, kwargs, _where(path) or os.path.basename(path))
        record.actions.append(action)
        if record.pause is None:
            # Only the DataFrame is wanted (loading the script, a calibration sample): the script's first action is
            # its job, and the script stops there.
            raise _ScriptStopped()
        return record.pause.hand_over(action, original, record.release)

    return act


def _is_actor_method(func: Any) -> bool:
    # A @daft.cls class's method: its _cls is the instance daft.cls made (a @daft.func has a no-op one).
    return hasattr(func._cls, "_daft_setup_args")


def _udf_call(original: Any, record: ScriptPass, plan: PlanHandle | None, path: str, *, keep: bool) -> Any:
    from daft.expressions import Expression

    def call(func: Any, *args: Any, **kwargs: Any) -> Any:
        uses_columns = any(isinstance(a, Expression) for a in (*args, *kwargs.values()))
        if not uses_columns or not _is_actor_method(func):
            return original(func, *args, **kwargs)
        record.udfs.append(
            UdfUse(
                name=func.name,
                batch_size=func.batch_size,
                max_concurrency=func.max_concurrency,
                cpus=func.cpus,
                gpus=func.gpus,
                is_batch=func.is_batch,
                where=_where(path) or os.path.basename(path),
                is_async=bool(func.is_async),
                is_generator=bool(func.is_generator),
            )
        )
        if plan is None:
            return original(func, *args, **kwargs)
        return original(configure(func, plan, keep=keep), *args, **kwargs)

    return call


def configure(func: Any, plan: PlanHandle, *, keep: bool) -> Any:
    """``func`` (a ``@daft.cls`` method) with the plan's settings and its batches timed for the run."""
    from daftscale.udf import current_sink, note_instrumented

    changes: dict[str, Any] = {}
    if not keep:
        changes["max_concurrency"] = plan.concurrency
        if func.is_batch and plan.udf_batch_size is not None:
            # None: the plan keeps the script's own batch size (Daft's default, measured as it is).
            changes["batch_size"] = plan.udf_batch_size
    elif func.max_concurrency and func.max_concurrency > plan.concurrency and _lowered_for_cluster(plan):
        # The author's pool does not fit the cluster: Daft would wait 120 s for actors that never start, then
        # run a partial pool. The plan lowered it (and says so in its warnings); so does the run.
        changes["max_concurrency"] = plan.concurrency
    changes["cpus"] = plan.udf_cpus if plan.udf_cpus else func.cpus
    changes["gpus"] = plan.udf_gpus
    sink = current_sink()
    if sink is not None and sink.get("on_error") is not None and func.on_error is None:
        # As actor_udf does: --on-error fills in a UDF that sets none, and one failed call is one null batch.
        changes["on_error"] = sink["on_error"]
        changes["max_retries"] = 0
    label = func.name_override or func.__qualname__
    if timed_method(func):
        changes["_cls"] = TimedInstance(func._cls, sink, label)
        note_instrumented(label)  # its calls are recorded, so the stall watchdog can watch them
    elif not func.is_generator:
        # A row-wise method (a record per row would cost more than the row) or an async one (its calls overlap)
        # is not timed call by call, but its progress is reported, so a call that never returns is a stall the
        # watchdog stops rather than a silent hang.
        changes["_cls"] = WatchedInstance(func._cls, sink, label)
        note_instrumented(label, watched_only=True)
    return replace(func, **changes)


def _lowered_for_cluster(plan: PlanHandle) -> bool:
    return any(w.code == "CONCURRENCY_EXCEEDS_CLUSTER" for w in plan.plan.warnings)


# ---------------------------------------------------------------------------------------------------
# Timing a script's UDF inside its actors


def _base() -> type:
    from daft.udf.udf_v2 import ClsBase

    return ClsBase  # type: ignore[no-any-return]


class TimedInstance(_base()):  # type: ignore[misc]
    """Stands in for a ``@daft.cls`` instance in Daft's UDF: builds the user's object (timed: the model
    load) and times every batch, recording to the run's sink as :func:`daftscale.udf.actor_udf` does."""

    def __init__(self, inner: Any, sink: dict[str, Any] | None, label: str) -> None:
        self._inner = inner
        self._sink = sink
        self._label = label
        self._instance: Any = None
        self._recorder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        # The user's object and the recorder live in the actor; only what builds them travels.
        return {"_inner": self._inner, "_sink": self._sink, "_label": self._label}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._instance = None
        self._recorder = None

    def _daft_get_instance(self) -> Any:
        if self._instance is None:
            from daftscale.udf import recorder_for

            start = time.time()
            try:
                self._recorder = recorder_for(self._sink, self._label)
            except Exception:  # measurement must never fail the user's batch: run it unrecorded
                self._recorder = recorder_for(None, self._label)
            self._instance = self._inner._daft_get_instance()
            self._recorder.ready(start, time.time())
        return self._instance

    def _daft_bind_method(self, method: Any) -> Any:
        from daftscale.udf import recorded_call

        instance = self._daft_get_instance()
        recorder = self._recorder

        def call(*args: Any, **kwargs: Any) -> Any:
            return method(instance, *args, **kwargs)

        def bound(*args: Any, **kwargs: Any) -> Any:
            return recorded_call(recorder, call, args, kwargs)

        return bound


class WatchedInstance(TimedInstance):
    """A :class:`TimedInstance` for a row-wise or async ``@daft.cls`` method: its model load is recorded as
    any, and its calls report progress through a :class:`~daftscale.udf.CallWindow` rather than one record
    per call (the stall watchdog's view, not the report's)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._window: Any = None

    def _calls(self) -> Any:
        if getattr(self, "_window", None) is None:
            from daftscale.udf import CallWindow, batch_rows

            self._batch_rows = batch_rows
            self._window = CallWindow(self._recorder)
        return self._window

    def _daft_bind_method(self, method: Any) -> Any:
        instance = self._daft_get_instance()
        window = self._calls()
        rows_of = self._batch_rows
        if inspect.iscoroutinefunction(method):  # an async row-wise method: Daft gathers its coroutines

            async def bound_async(*args: Any, **kwargs: Any) -> Any:
                with window.call(rows_of(args, kwargs)):
                    return await method(instance, *args, **kwargs)

            return bound_async

        def bound(*args: Any, **kwargs: Any) -> Any:
            with window.call(rows_of(args, kwargs)):
                return method(instance, *args, **kwargs)

        return bound

    def _daft_bind_coroutine_method(self, method: Any) -> Any:
        # An async batch method; Daft awaits what this returns.
        return self._daft_bind_method(method)


def continue_script(pipe: Pipeline) -> bool:
    """Run the lines after a plain script's terminal action once its job has run (:func:`daftscale.run.run`),
    with the action returning what it returns under python; True if there was a script to go on with.

    A script whose job had no result it can use (a ``collect()`` written elsewhere by ``--output``) stops at its
    action, as it did before. Raises :class:`PipelineError` when those lines fail.
    """
    if not isinstance(pipe, ScriptPipeline) or pipe._paused is None:
        return False
    result, pipe.job_result = pipe.job_result, None
    action = pipe._paused[0].action
    writes = action is not None and action.name.startswith("write_")
    usable = result is not None and (writes == hasattr(result, "files"))
    if not usable:
        pipe.stop_paused()
        return False
    return pipe.finish_after_job(result)


def stop_script(pipe: Pipeline) -> None:
    """End a paused plain script at its action (the run failed or was stopped): nothing after it runs."""
    if isinstance(pipe, ScriptPipeline):
        pipe.job_result = None
        pipe.stop_paused()


__all__ = [
    "Pause",
    "ScriptPipeline",
    "TimedInstance",
    "WatchedInstance",
    "configure",
    "continue_script",
    "is_plain_script",
    "prepare_job",
    "stop_script",
]
