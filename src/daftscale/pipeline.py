"""Pipeline files: plain Python that builds a Daft DataFrame and marks where the scaling step goes.

A pipeline is a function ``build(plan) -> daft.DataFrame`` that calls ``plan.apply(df)`` at the
scaling step (right after the light read) and ``plan.udf(Model, ...)`` for the model. Decorated with
:func:`pipeline`, the same file runs with ``python pipeline.py [run options]`` and under
``daftscale run pipeline.py``::

    import daft, daftscale

    class Scorer:                       # a plain class; daftscale makes it a Daft actor UDF
        def __call__(self, paths: list[str]) -> list[float]: ...

    @daftscale.pipeline(batch_size=64)
    def build(plan: daftscale.PlanHandle) -> daft.DataFrame:
        df = daft.read_parquet("data/paths.parquet")
        df = plan.apply(df)             # the scaling step: repartition(N) or into_batches(B)
        score = plan.udf(Scorer, return_dtype=daft.DataType.float64())
        return df.with_column("score", score(df["path"]))

    if __name__ == "__main__":
        build.main()

``build`` receives a :class:`~daftscale.plan_handle.PlanHandle` over the plan. How the plan is made:
:func:`probe` calls ``build`` once with a probe handle whose ``apply`` only records the DataFrame
reaching the scaling step; that DataFrame is profiled, planned for the cluster at hand, and ``build``
is called again with the real plan's handle. ``build`` must therefore be cheap and free
of side effects until the DataFrame executes (Daft is lazy, so ordinary pipelines are).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from daftscale.errors import PipelineError

if TYPE_CHECKING:
    import daft

    from daftscale.plan_handle import PlanHandle

BuildFn = Callable[[Any], "daft.DataFrame"]


class Pipeline:
    """A ``build(plan)`` function with the planner options it was declared with.

    Calling it calls ``build``. :meth:`main` is the ``python pipeline.py`` entry point.
    """

    def __init__(self, build: BuildFn, planner_kwargs: dict[str, Any] | None = None, name: str | None = None) -> None:
        if not callable(build):
            raise PipelineError(f"a pipeline needs a build(plan) function, got {type(build).__name__}")
        self.build = build
        self.planner_kwargs = dict(planner_kwargs or {})
        self.name = name or getattr(build, "__name__", "pipeline")
        self.source = getattr(getattr(build, "__code__", None), "co_filename", None)
        self.__doc__ = getattr(build, "__doc__", None)

    def __call__(self, plan: Any) -> daft.DataFrame:
        return self.build(plan)

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, {self.planner_kwargs!r})"

    def planner_options(self, given: dict[str, Any]) -> dict[str, Any]:
        """The planner options this pipeline declares, with those ``given`` (not None) over them.

        >>> Pipeline(lambda plan: None, {"concurrency": 4, "batch_size": 16}).planner_options(
        ...     {"batch_size": 8, "concurrency": None})
        {'concurrency': 4, 'batch_size': 8}
        """
        return {**self.planner_kwargs, **{k: v for k, v in given.items() if v is not None}}

    def main(self, argv: Sequence[str] | None = None) -> None:
        """Run this pipeline as ``daftscale run THIS_FILE [options]`` would, then exit with its code.

        The ``python pipeline.py`` entry point: the command line is the CLI's (imported here, when the
        file runs as a script, never when daftscale loads a pipeline), and the CLI is handed this object
        itself, so the file is not imported a second time.
        """
        from daftscale.cli import main as cli_main

        args = list(sys.argv[1:] if argv is None else argv)
        sys.exit(cli_main(["run", self.source or self.name, *args], pipeline=self))


def pipeline(build: BuildFn | None = None, **planner_kwargs: Any) -> Any:
    """Declare ``build(plan) -> daft.DataFrame`` as a pipeline; keyword arguments go to the planner.

    Usable bare (``@daftscale.pipeline``) or with options (``@daftscale.pipeline(batch_size=64)``);
    the options are those of :func:`daftscale.plan.plan` (``concurrency``, ``batch_size``,
    ``strategy``...), and command-line options given to ``daftscale run`` override them.

    >>> @pipeline(batch_size=32)
    ... def build(plan):
    ...     import daft
    ...     return plan.apply(daft.from_pydict({"x": [1, 2, 3]}))
    >>> build.planner_kwargs
    {'batch_size': 32}
    """
    if build is not None:
        return Pipeline(build, planner_kwargs)
    return lambda fn: Pipeline(fn, planner_kwargs)


def load_pipeline(path: str | os.PathLike[str] | Pipeline, *, script_args: Sequence[str] = ()) -> Pipeline:
    """Import a pipeline file by path (not as ``__main__``) and return its :class:`Pipeline`.

    The file must define one object made with :func:`pipeline`, or a plain function named ``build``;
    a file with neither that does not import daftscale is a plain Daft script
    (:class:`daftscale.script.ScriptPipeline`), which runs with ``script_args`` as its ``sys.argv[1:]``.
    Raises :class:`PipelineError` naming the problem and the fix.
    """
    if isinstance(path, Pipeline):
        if script_args:
            raise PipelineError("script arguments are for a plain Daft script's path, not a Pipeline object: drop them")
        return path
    path = os.fspath(path)
    if not os.path.exists(path):
        raise PipelineError(f"pipeline file {path} does not exist: pass the path of a .py file that builds a DataFrame")
    if os.path.isdir(path):
        raise PipelineError(f"{path} is a directory: pass the pipeline .py file inside it")
    from daftscale.script import ScriptPipeline, is_plain_script

    if is_plain_script(path):
        # A plain Daft script (no daftscale import, no build function): importing it would run the job.
        return ScriptPipeline(path, script_args=script_args)
    if script_args:
        raise PipelineError(
            f"{path} is a pipeline file, which takes no script arguments ({' '.join(script_args)}): drop them, or "
            "set its options with @daftscale.pipeline(...) and daftscale's own options"
        )
    module_name = f"daftscale_pipeline_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineError(f"{path} is not a Python file: pass a .py file that builds a DataFrame")
    module = importlib.util.module_from_spec(spec)
    # The file's own directory goes first on sys.path so its sibling imports work, as with `python file.py`.
    directory = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, directory)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SystemExit as exc:
        raise PipelineError(f"{path} exited while being imported (code {exc.code}): keep work under __main__") from exc
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        line = _error_line(exc, path)
        raise PipelineError(
            f"{path} failed to import: {type(exc).__name__}: {exc}{line}: fix the error in the file"
        ) from exc
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
        # Out of sys.modules, the file's classes and functions are pickled by value (as those of a
        # `python file.py` __main__ are), so Ray workers, which cannot import the file, still get them.
        sys.modules.pop(module_name, None)
    found = [v for v in vars(module).values() if isinstance(v, Pipeline)]
    if len({id(v) for v in found}) > 1:
        names = ", ".join(sorted(k for k, v in vars(module).items() if isinstance(v, Pipeline)))
        raise PipelineError(f"{path} defines several pipelines ({names}): keep one @daftscale.pipeline per file")
    if found:
        return found[0]
    build = getattr(module, "build", None)
    if callable(build):
        return Pipeline(build, name="build")
    raise PipelineError(
        f"{path} defines no pipeline: decorate a `def build(plan) -> daft.DataFrame` with @daftscale.pipeline "
        "(or make it a plain Daft script that reads and writes its data)"
    )


def _error_line(exc: BaseException, path: str) -> str:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if os.path.abspath(tb.tb_frame.f_code.co_filename) == os.path.abspath(path):
            line = tb.tb_lineno
        tb = tb.tb_next
    if line is None and isinstance(exc, SyntaxError):
        return ""  # a SyntaxError's own message already says "(file, line N)"
    return f" (line {line})" if line else ""


def check_dataframe(result: Any, pipeline: Pipeline, *, when: str) -> daft.DataFrame:
    """``result`` if it is a Daft DataFrame, else a :class:`PipelineError` saying what build returned."""
    import daft

    if not isinstance(result, daft.DataFrame):
        raise PipelineError(
            f"{pipeline.name}() returned {type(result).__name__}{' ' + when if when else ''}, not a daft.DataFrame: "
            "make build(plan) return the DataFrame (without collecting or writing it)"
        )
    return result


# ---------------------------------------------------------------------------------------------------
# The probe: find the DataFrame at the scaling step


class _StepRecorder:
    """The probe handle's ``record`` hook: keeps each DataFrame reaching ``plan.apply``, and the
    ``daft.read_parquet`` paths seen before it."""

    def __init__(self, reads: list[Any], text_reads: list[Any]) -> None:
        self.applied: list[daft.DataFrame] = []
        self._reads = reads
        self._text_reads = text_reads
        self.reads_before: list[Any] = []
        self.text_reads_before: list[Any] = []
        self.udfs = 0

    def __call__(self, df: daft.DataFrame) -> None:
        self.applied.append(df)
        self.reads_before = list(self._reads)
        self.text_reads_before = list(self._text_reads)

    def note_udf(self) -> None:
        self.udfs += 1


@dataclass
class Probe:
    """The DataFrame at the scaling step, found by building once with a probe plan."""

    scaling_input: daft.DataFrame
    output: daft.DataFrame
    # The paths of the one ``daft.read_parquet`` called before ``plan.apply``, when there was exactly one:
    # the scaling input may then be profiled from the files' footers (profile_dataframe's parquet_paths).
    parquet_paths: list[str] | None = None
    # The paths of every ``daft.read_parquet`` called before ``plan.apply`` (those given as paths), one list per
    # read: their files may be read in merged tasks (daftscale.execution.read_merge).
    parquet_reads: list[list[str]] = field(default_factory=list)
    # The ``plan.udf(...)`` models the build made: their actor pools run at once and share the cluster.
    models: int = 1
    # The paths of the one ``daft.read_csv``/``daft.read_json`` called before ``plan.apply``, when it was the only
    # read: Daft runs one task per file, which the profile lays out by the files' sizes (no footers to count).
    text_read_paths: list[str] | None = None

    def planner_options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with the models the probe counted, unless they say (a script counts its own)."""
        return {"models": self.models, **kwargs} if self.models > 1 else kwargs


def probe(pipe: Pipeline) -> Probe:
    """Build ``pipe`` with a probe plan and return the DataFrame that reaches ``plan.apply``."""
    from daftscale.cluster import ClusterSpec
    from daftscale.plan import plan as make_plan
    from daftscale.plan_handle import PlanHandle
    from daftscale.profile import profile_numbers

    # The provisional plan only answers what build reads from it (plan.udf, plan.batch_size...); its
    # scaling step is never applied, the probe handle records the DataFrame reaching apply instead.
    provisional = make_plan(profile_numbers(1, 1), ClusterSpec(nodes=1, cpus_per_node=1), concurrency=1, batch_size=1)
    reads: list[Any] = []
    text_reads: list[Any] = []
    recorder = _StepRecorder(reads, text_reads)
    handle = PlanHandle(provisional, record=recorder, on_udf=recorder.note_udf)
    with _recording_reads(reads), _recording_reads(text_reads, TEXT_READS):
        output = check_dataframe(_call_build(pipe, handle), pipe, when="to the probe plan")
    if not recorder.applied:
        raise PipelineError(
            f"{pipe.name}() never calls plan.apply(df): add `df = plan.apply(df)` at the scaling step, "
            "right after the light read"
        )
    if len(recorder.applied) > 1:
        raise PipelineError(f"{pipe.name}() calls plan.apply(df) {len(recorder.applied)} times: call it once")
    reads = [paths for paths in map(_as_paths, recorder.reads_before) if paths]
    paths = reads[0] if len(recorder.reads_before) == 1 and reads else None
    only_text_read = len(recorder.text_reads_before) == 1 and not recorder.reads_before
    text_paths = _as_paths(recorder.text_reads_before[0]) if only_text_read else None
    scaling_input = check_dataframe(recorder.applied[0], pipe, when="to plan.apply")
    return Probe(
        scaling_input=scaling_input,
        output=output,
        parquet_paths=paths,
        parquet_reads=reads,
        models=max(1, recorder.udfs),
        text_read_paths=text_paths,
    )


def _as_paths(given: Any) -> list[str] | None:
    """``daft.read_parquet``'s path argument as a list of paths, or None when it is something else."""
    if isinstance(given, (str, os.PathLike)):
        return [os.fspath(given)]
    if isinstance(given, (list, tuple)) and given and all(isinstance(p, (str, os.PathLike)) for p in given):
        return [os.fspath(p) for p in given]
    return None


# The probe's lists of path arguments while it builds, by the ``daft`` read they were given to (empty otherwise):
# each list is shared by the reads of one kind (Parquet; CSV and JSON).
_probe_reads: dict[str, list[Any]] = {}
TEXT_READS = ("read_csv", "read_json")


@contextlib.contextmanager
def _wrapping_reads(
    wrap: Callable[[Any], Callable[..., Any]], names: Sequence[str] = ("read_parquet",)
) -> Iterator[None]:
    """Each ``daft.<name>`` of ``names`` replaced by ``wrap(the original)`` inside the block; always restored."""
    import daft

    originals = {name: getattr(daft, name) for name in names}
    try:
        for name, original in originals.items():
            setattr(daft, name, wrap(original))
        yield
    finally:
        for name, original in originals.items():
            setattr(daft, name, original)


@contextlib.contextmanager
def _recording_reads(reads: list[Any], names: Sequence[str] = ("read_parquet",)) -> Iterator[None]:
    """Record into ``reads`` the path argument of each call of a ``daft.<name>`` of ``names`` made inside the block
    (then read as usual), and of each read a plain script reports (:func:`note_file_read`)."""

    def recording(original: Callable[..., Any]) -> Callable[..., Any]:
        def read(path: Any, *args: Any, **kwargs: Any) -> Any:
            reads.append(path)
            return original(path, *args, **kwargs)

        return read

    previous = {name: _probe_reads.get(name) for name in names}
    _probe_reads.update(dict.fromkeys(names, reads))
    try:
        with _wrapping_reads(recording, names):
            yield
    finally:
        for name, earlier in previous.items():
            if earlier is None:
                _probe_reads.pop(name, None)
            else:
                _probe_reads[name] = earlier


def note_file_read(name: str, path: Any) -> None:
    """Tell the probe building now of a ``daft.read_parquet/read_csv/read_json(path)`` it did not see called (a
    plain script's read, made when the script was loaded); no-op outside a probe and for other reads."""
    reads = _probe_reads.get(name)
    if reads is not None:
        reads.append(path)


@contextlib.contextmanager
def reading_files(read_paths: Sequence[str] | None, files: Sequence[str]) -> Iterator[list[str]]:
    """Inside the block, ``daft.read_parquet`` called with ``read_paths`` (as the probe recorded them) reads
    ``files`` instead, with the same options; other reads are left alone. Yields a list that gets one entry per
    read so changed (none: the build did not make that call). No-op when ``read_paths`` is None."""
    done: list[str] = []
    if read_paths is None:
        yield done
        return
    wanted = list(read_paths)

    def swapping(original: Callable[..., Any]) -> Callable[..., Any]:
        def read_parquet(path: Any, *args: Any, **kwargs: Any) -> Any:
            if _as_paths(path) != wanted:
                return original(path, *args, **kwargs)
            done.append(str(len(files)))
            return original(list(files), *args, **kwargs)

        return read_parquet

    with _wrapping_reads(swapping):
        yield done


def build_with(pipe: Pipeline, plan: PlanHandle) -> daft.DataFrame:
    """Build ``pipe`` with the real plan's handle, checking it returns a DataFrame."""
    return check_dataframe(_call_build(pipe, plan), pipe, when="")


def _call_build(pipe: Pipeline, plan: Any) -> Any:
    from daftscale.errors import DaftscaleError

    try:
        return pipe(plan)
    except (DaftscaleError, KeyboardInterrupt):
        raise
    except Exception as exc:
        line = _error_line(exc, pipe.source) if pipe.source else ""
        raise PipelineError(
            f"{pipe.name}(plan) raised {type(exc).__name__}: {exc}{line}: fix the pipeline's build function"
        ) from exc
