"""Instrumented UDFs: the user writes a plain class, daftscale builds the Daft actor UDF and times every call.

:func:`actor_udf` turns ``class Model: def __call__(self, values: list) -> list`` into a
``@daft.cls(max_concurrency=C)`` class whose ``@daft.method.batch(batch_size=B)`` method calls the
user's method and records ``(actor, node, pid, start, end, rows)`` for each call. The records go to a
*sink* chosen by :func:`daftscale.run.run` before the pipeline is built:

- on a Ray cluster spread over several hosts, a named Ray actor (:class:`RayCollector`): UDF actors run
  in Ray actor processes on any node, so only Ray itself reaches them all;
- on Daft's native runner, and on a Ray cluster whose nodes all run on this host (a local cluster), a
  spool directory (:class:`SpoolCollector`): Daft 0.7 runs native actor UDFs in child processes of the
  driver (one per actor), so an in-process list would stay empty, and a file costs no Ray worker process.

Outside a run there is no sink and recording is a no-op: the UDF behaves like any Daft UDF.
A calibration cost probe's sink may ask for a call that runs out of memory to be run again in halves
(:func:`recorded_call`), so that one sample run still measures the UDF's costs and memory.
:func:`row_udf` is the uninstrumented per-row helper (a "heavy read" such as decoding a file).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from daftscale import faults

if TYPE_CHECKING:
    from daftscale.plan import ScalingPlan

# What a UDF may do when a call raises, as Daft's ``on_error`` takes it: "raise" fails the query,
# "log"/"ignore" make every row of the failed batch null (Daft 0.7.26 nulls the whole batch, not the one
# bad row; "log" also logs the error in the actor). daftscale counts those rows from its own records.
ON_ERROR_CHOICES = ("raise", "log", "ignore")

# Longest error text kept per failed call: enough for the exception's message, short enough for one line.
MAX_ERROR_CHARS = 300

# Ray namespace of the collector actors: fixed so UDF actors (in their own job namespace) can find them.
RAY_NAMESPACE = "daftscale"

# How long a UDF actor waits for the collector to acknowledge a finished call. The ack is awaited (not
# fire-and-forget) because Daft tears the actor pool down right after the query, and calls still queued
# in a dead actor's submitter would be lost; on timeout the record is dropped, never the batch.
RECORD_ACK_TIMEOUT_S = 10.0

_sink: dict[str, Any] | None = None
# Names of the instrumented UDFs built inside the current ``recording`` block (driver side only): the
# run arms its stall watchdog only when some UDF will report calls.
_built: Instrumented | None = None

# How often a watched (row-wise or async) UDF's actor reports the rows it finished, and after how long a call
# still running is reported as running (CallWindow): often enough for the stall watchdog, whose floor is
# seconds, and seldom enough that a row-wise model's calls cost next to nothing to watch.
WINDOW_S = 1.0


class Instrumented(list[str]):
    """The timed UDFs built inside a :func:`recording` block (one label each), and in :attr:`watched_only` the
    UDFs that report only progress for the stall watchdog (row-wise and async methods, :class:`CallWindow`)."""

    def __init__(self) -> None:
        super().__init__()
        self.watched_only: list[str] = []

    @property
    def watched(self) -> bool:
        """Whether any UDF built in the block reports progress (timed or watched only)."""
        return bool(self) or bool(self.watched_only)


def current_sink() -> dict[str, Any] | None:
    """The sink UDFs built now will record to (set by :func:`recording`), or ``None``."""
    return _sink


@contextlib.contextmanager
def recording(sink: dict[str, Any] | None) -> Iterator[Instrumented]:
    """Make UDFs built inside the block record to ``sink`` (a collector's :attr:`sink` spec).

    Yields the list of the instrumented UDFs' names built inside the block (:class:`Instrumented`).
    """
    global _sink, _built
    built = Instrumented()
    previous, _sink = _sink, sink
    previous_built, _built = _built, built
    try:
        yield built
    finally:
        _sink = previous
        _built = previous_built


def note_instrumented(label: str, *, watched_only: bool = False) -> None:
    """Tell the enclosing :func:`recording` block that a UDF reporting its calls was built (it arms the
    run's stall watchdog); ``watched_only``: it reports progress, not its calls (:class:`CallWindow`).
    Outside a run with a sink, nothing."""
    if _built is not None and _sink is not None:
        (_built.watched_only if watched_only else _built).append(label)


# ---------------------------------------------------------------------------------------------------
# The recorder inside each UDF actor


class _Recorder:
    """Writes one actor's call records to its sink; never raises into the user's batch.

    A record it cannot deliver is counted, not lost without a trace: every later record carries the
    actor's running count in ``dropped``, so the driver sums the last count seen per actor (and, from
    the other side, counts calls that started but never reported an end).
    """

    def __init__(self, sink: dict[str, Any] | None, udf_name: str) -> None:
        self.kind = sink["kind"] if sink else "none"
        self.run = (sink or {}).get("run")  # which of a kept collector's runs these records belong to
        self.udf_name = udf_name
        self.dropped = 0
        self._records = 0
        self._drop_every_second = "drop-records" in ((sink or {}).get("faults") or ())
        self.pid = os.getpid()
        self.node = socket.gethostname()
        self.actor = f"{self.node}:{self.pid}"
        self._handle: Any = None
        self._file: Any = None
        self._rss_before: dict[str, int | None] = {}
        self.halve_out_of_memory = bool((sink or {}).get("halve_out_of_memory"))
        if self.kind == "ray":
            import ray

            self.node, self.actor = _ray_identity(self.pid)
            try:
                self._handle = ray.get_actor(sink["name"], namespace=RAY_NAMESPACE)  # type: ignore[index]
            except Exception:
                # The collector died (its node lost, say) after the run checked it: this actor's records are
                # counted as dropped (_emit), and the user's model still runs.
                self._handle = None
        elif self.kind == "spool":
            if sink.get("ray"):  # type: ignore[union-attr]
                # A Ray actor on a host-local cluster: named as on Ray, so calls line up with node memory.
                self.node, self.actor = _ray_identity(self.pid)
            path = os.path.join(sink["dir"], f"{self.pid}-{uuid.uuid4().hex[:8]}.jsonl")  # type: ignore[index]
            # Line-buffered so the driver's progress line sees each event as it happens.
            self._file = open(path, "a", buffering=1)  # open for the actor's lifetime

    def started(self, key: str, start: float, rows: int) -> None:
        event = {"event": "start", "key": key, "actor": self.actor, "node": self.node, "start": start, "rows": rows}
        self._emit(event, wait=False)
        self._rss_before[key] = reset_peak_rss()

    def _memory(self, key: str, event: dict[str, Any]) -> dict[str, Any]:
        """``event`` with ``memory_bytes``, the call's peak resident memory above the process's before it."""
        before, peak = self._rss_before.pop(key, None), peak_rss()
        if before is not None and peak is not None:
            event["memory_bytes"] = max(0, peak - before)
        return event

    def _call_event(self, kind: str, key: str, start: float, end: float, rows: int) -> dict[str, Any]:
        return {
            "event": kind,
            "key": key,
            "actor": self.actor,
            "node": self.node,
            "pid": self.pid,
            "udf": self.udf_name,
            "start": start,
            "end": end,
            "rows": rows,
        }

    def finished(self, key: str, start: float, end: float, rows: int) -> None:
        self._emit(self._memory(key, self._call_event("end", key, start, end, rows)), wait=True)

    def window(self, key: str, start: float, end: float, rows: int) -> None:
        """Rows a watched UDF finished between ``start`` and ``end`` (:class:`CallWindow`): progress for the
        stall watchdog, not a call (``window`` is true, so the report leaves it out)."""
        self._emit({**self._call_event("end", key, start, end, rows), "window": True}, wait=True)

    def ready(self, start: float, end: float) -> None:
        """The actor built the user's class (its model load). Daft does this on the actor's first batch, so
        the time also says when that batch arrived; ``spawned`` is when the actor's process was created."""
        event = {"event": "ready", "actor": self.actor, "node": self.node, "pid": self.pid, "udf": self.udf_name}
        self._emit({**event, "start": start, "end": end, "spawned": _process_start(start)}, wait=True)

    def failed(self, key: str, start: float, end: float, rows: int, error: BaseException) -> None:
        # Awaited like a finished call: the run's failed-row count and its error message come from here.
        event = self._memory(key, self._call_event("failed", key, start, end, rows))
        event["error"] = _error_text(error)
        self._emit(event, wait=True)

    def halved(self, key: str, start: float, end: float, rows: int, error: BaseException) -> None:
        """A call that ran out of memory and is run again in halves (:func:`recorded_call`): not a failure
        of the run, and not a call whose time says anything of the UDF's cost."""
        event = self._memory(key, self._call_event("halved", key, start, end, rows))
        event["error"] = _error_text(error)
        self._emit(event, wait=True)

    def _emit(self, event: dict[str, Any], *, wait: bool) -> None:
        if self.run is not None:
            event["run"] = self.run
        counted = event["event"] != "start"  # a start only feeds the progress line
        if counted:
            self._records += 1
            event["dropped"] = self.dropped
        try:
            if counted and self._drop_every_second and self._records % 2 == 0:
                raise faults.InjectedFault("drop-records: this record is not delivered (DAFTSCALE_FAULTS)")
            if self.kind == "ray":
                import ray

                if self._handle is None:
                    raise RuntimeError("the run's collector could not be found when this actor started")
                ref = self._handle.record.remote(event)
                if wait:
                    ray.get(ref, timeout=RECORD_ACK_TIMEOUT_S)
            elif self.kind == "spool":
                self._file.write(json.dumps(event) + "\n")
        except Exception:  # measurement must never fail the user's batch: count the loss instead
            if counted:
                self.dropped += 1


def _error_text(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:MAX_ERROR_CHARS]


def recorded_call(recorder: Any, call: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``call(*args, **kwargs)`` on one batch, recorded (start, then end or failure) by ``recorder``.

    A call that raises is recorded and re-raised, so Daft applies ``on_error``. Under a sink that asks for it
    (a calibration cost probe's), a call on more than one row that runs out of memory (``MemoryError``, a
    GPU's "out of memory") is instead recorded as halved and run again on each half of its rows, each half
    recorded as a call of its own and halved again if need be; the results are joined in order, so rows in
    still equal rows out. One probe run then measures what a batch that fits costs and how much memory a row
    needs, where failing the query would cost another sample run. The rows are the ``daft.Series`` among
    the arguments; a call with none (a row-wise method) is never halved.
    """
    from daftscale.errors import is_memory_error

    rows = batch_rows(args, kwargs)
    key = uuid.uuid4().hex[:12]
    start = time.time()
    recorder.started(key, start, rows)
    try:
        result = call(*args, **kwargs)
    except Exception as exc:
        end = time.time()
        if not (recorder.halve_out_of_memory and rows > 1 and is_memory_error(_error_text(exc))):
            recorder.failed(key, start, end, rows, exc)
            raise
        recorder.halved(key, start, end, rows, exc)
    else:
        recorder.finished(key, start, time.time(), rows)
        return result
    # Out of the except block, so the failed call's frames (and what they held: a GPU's tensors) are freed first.
    half = rows // 2
    parts = [recorded_call(recorder, call, *_rows_of(args, kwargs, lo, hi)) for lo, hi in ((0, half), (half, rows))]
    return _joined(parts)


class CallWindow:
    """Progress of a UDF daftscale does not time call by call, for the stall watchdog: a row-wise method (one
    call per row, where a record per call would cost more than the row) or an async one (calls overlap).

    Calls only touch counters here. A daemon thread reports, every ``WINDOW_S``, the rows finished since its
    last report as one window (:meth:`_Recorder.window`), and a call running longer than that as a running
    call with its real start, whose end is then reported when it comes. So a call that never returns shows
    as one running call, and a model making progress as windows of rows: what the watchdog needs, at a few
    records a second per actor. Windows are not calls: the report leaves them out.
    """

    def __init__(self, recorder: Any, period_s: float = WINDOW_S) -> None:
        self._recorder = recorder
        self._period_s = period_s
        self._lock = threading.Lock()
        self._running: dict[str, tuple[float, int]] = {}  # key -> (start, rows)
        self._announced: set[str] = set()
        self._rows = 0
        self._first: float | None = None
        self._last = 0.0
        self._thread: threading.Thread | None = None

    def begin(self, rows: int) -> str:
        key = uuid.uuid4().hex[:12]
        with self._lock:
            self._running[key] = (time.time(), rows)
            if self._thread is None:
                self._thread = threading.Thread(target=self._report_forever, name="daftscale-window", daemon=True)
                self._thread.start()
        return key

    def end(self, key: str, error: BaseException | None = None) -> None:
        now = time.time()
        with self._lock:
            start, rows = self._running.pop(key)
            announced = key in self._announced
            self._announced.discard(key)
            if error is None and not announced:
                self._rows += rows
                self._first = start if self._first is None else min(self._first, start)
                self._last = now
                return
        # A call reported as running, or one that raised (its error names the run's failure): its own record.
        if error is not None:
            self._recorder.failed(key, start, now, rows, error)
        else:
            self._recorder.finished(key, start, now, rows)

    @contextlib.contextmanager
    def call(self, rows: int) -> Iterator[None]:
        """One call of ``rows`` rows, for the length of the block; a call that raises is recorded with its error."""
        key = self.begin(rows)
        try:
            yield
        except Exception as exc:
            self.end(key, exc)
            raise
        self.end(key)

    def report(self) -> None:
        """Report the rows finished since the last report, and calls running longer than ``WINDOW_S``."""
        now = time.time()
        with self._lock:
            rows, first, last = self._rows, self._first, self._last
            self._rows, self._first = 0, None
            overdue = [
                (key, start, rows_in_call)
                for key, (start, rows_in_call) in self._running.items()
                if key not in self._announced and now - start >= self._period_s
            ]
            self._announced.update(key for key, _start, _rows in overdue)
        if rows and first is not None:
            self._recorder.window(uuid.uuid4().hex[:12], first, last, rows)
        for key, start, rows_in_call in overdue:
            self._recorder.started(key, start, rows_in_call)

    def _report_forever(self) -> None:
        while True:
            time.sleep(self._period_s)
            with contextlib.suppress(Exception):  # watching must never fail the user's model
                self.report()


def batch_rows(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Rows in a batch method's call: the length of its first ``daft.Series`` argument (1 with none: a
    row-wise method's call is one row)."""
    import daft

    for value in (*args, *kwargs.values()):
        if isinstance(value, daft.Series):
            return len(value)
    return 1


def _rows_of(args: tuple[Any, ...], kwargs: dict[str, Any], lo: int, hi: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The arguments of a call on rows ``lo:hi`` of the batch: every ``daft.Series`` sliced, the rest as given."""
    import daft

    def cut(value: Any) -> Any:
        return value.slice(lo, hi) if isinstance(value, daft.Series) else value

    return tuple(cut(a) for a in args), {name: cut(v) for name, v in kwargs.items()}


def _joined(parts: list[Any]) -> Any:
    """The results of a halved call's parts as one result of the first part's kind (Daft takes a list, a
    NumPy array, a pyarrow array or a ``daft.Series`` from a batch method)."""
    import daft

    first = parts[0]
    if isinstance(first, daft.Series):
        return daft.Series.concat(
            [p if isinstance(p, daft.Series) else daft.Series.from_pylist(list(p)) for p in parts]
        )
    module = type(first).__module__.split(".")[0]
    if module == "numpy":
        import numpy

        return numpy.concatenate(parts)
    if module == "pyarrow":
        import pyarrow

        return pyarrow.concat_arrays([p.combine_chunks() if isinstance(p, pyarrow.ChunkedArray) else p for p in parts])
    return [value for part in parts for value in part]


def _ray_identity(pid: int) -> tuple[str, str]:
    """``(node, actor)`` of this Ray worker as call records and node memory name them: the first 8 hex digits
    of Ray's node id and actor id (``task-<pid>`` outside an actor)."""
    import ray

    context = ray.get_runtime_context()
    return context.get_node_id()[:8], (context.get_actor_id() or f"task-{pid}")[:8]


def reset_peak_rss() -> int | None:
    """Reset this process's peak resident memory to its current resident memory, and return that (bytes).

    Linux keeps a high-water mark of each process's resident memory (``VmHWM``); writing ``5`` to
    ``/proc/self/clear_refs`` resets it, so the mark read after a UDF call (:func:`peak_rss`) is that call's
    own peak: the memory a batch really needs as Daft delivers it, measured in the actor. It sees host
    memory only (a GPU model's device memory is not in it). ``None`` where the kernel does not offer it.
    """
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return _proc_status("VmRSS")
    except OSError:
        return None


def peak_rss() -> int | None:
    """This process's peak resident memory since :func:`reset_peak_rss` (bytes), or ``None``."""
    try:
        return _proc_status("VmHWM")
    except OSError:
        return None


def _proc_status(field_name: str) -> int | None:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024  # the kernel writes kB
    return None


def recorder_for(sink: dict[str, Any] | None, udf_name: str) -> Any:
    """A call recorder for one actor (built inside the actor): what :func:`actor_udf` records with, for UDFs
    daftscale times without building them (a plain script's ``@daft.cls``, :mod:`daftscale.script`)."""
    return _Recorder(sink, udf_name)


# ---------------------------------------------------------------------------------------------------
# Building the Daft UDFs


def actor_udf(
    cls: type,
    plan: ScalingPlan,
    *,
    return_dtype: Any,
    method: str = "__call__",
    init_args: tuple[Any, ...] = (),
    init_kwargs: dict[str, Any] | None = None,
    on_error: str | None = None,
    name: str | None = None,
    as_series: bool = False,
) -> Any:
    """Wrap a plain class as an instrumented Daft actor UDF sized by ``plan``.

    ``cls(*init_args, **init_kwargs)`` is built once per actor (load the model there); each call gets
    up to ``plan.batch_size`` rows as one Python ``list`` per column argument (or the ``daft.Series``
    itself with ``as_series=True``) and must return one value per row (a list, NumPy array, pyarrow
    array or ``daft.Series``). The pool has ``plan.concurrency`` actors, each asking for
    ``plan.udf_cpus`` CPUs and ``plan.udf_gpus`` GPUs.

    ``on_error`` is Daft's: ``"raise"`` (Daft's default) fails the query on the first call that raises;
    ``"log"`` and ``"ignore"`` give null for every row of a batch whose call raised. A run's own
    ``on_error`` (``daftscale run --on-error``) fills it in when the pipeline leaves it ``None``. Every
    failed call is recorded (rows, error) so the run report counts the rows that came out null.

    Returns an instance to call on expressions, as with any ``@daft.cls`` class::

        score = actor_udf(Scorer, plan, return_dtype=daft.DataType.float64())
        df = df.with_column("score", score(df["path"]))
    """
    import daft

    if not isinstance(cls, type):
        raise TypeError(f"actor_udf needs a class, got {type(cls).__name__}: pass the class, not an instance")
    if not callable(getattr(cls, method, None)):
        raise TypeError(f"{cls.__name__} has no method {method!r}: define it or pass method=")
    sink = current_sink()
    if on_error is None and sink is not None:
        on_error = sink.get("on_error")
    if on_error is not None and on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {', '.join(ON_ERROR_CHOICES)}, got {on_error!r}: pick one of those")
    label = name or cls.__name__
    note_instrumented(label)
    args, kwargs = tuple(init_args), dict(init_kwargs or {})

    def __init__(self: Any) -> None:
        start = time.time()
        self._recorder = _Recorder(sink, label)
        self._inner = cls(*args, **kwargs)
        self._call = getattr(self._inner, method)
        self._recorder.ready(start, time.time())

    def __call__(self: Any, *columns: Any) -> Any:
        def call(*batch: Any) -> Any:
            return self._call(*(batch if as_series else (c.to_pylist() for c in batch)))

        return recorded_call(self._recorder, call, columns, {})

    __call__ = daft.method.batch(return_dtype=return_dtype, batch_size=plan.udf_batch_size)(__call__)
    # A class made here (not at module level) is pickled by value, so workers need only daftscale and
    # the user's class, and the sink spec travels with it.
    wrapper = type(label, (), {"__init__": __init__, "__call__": __call__, "__module__": __name__})
    options: dict[str, Any] = {"max_concurrency": plan.concurrency, "name_override": label}
    if plan.udf_gpus:
        options["gpus"] = plan.udf_gpus
    if plan.udf_cpus:
        options["cpus"] = plan.udf_cpus
    if on_error is not None:
        options["on_error"] = on_error
        # No retries of a failed call, so one failed call is exactly one batch of null rows (Daft
        # 0.7.26's default is the same; pinned because the failed-row count relies on it).
        options["max_retries"] = 0
    return daft.cls(wrapper, **options)()


def row_udf(fn: Callable[..., Any] | None = None, *, return_dtype: Any = None) -> Any:
    """A per-row Daft UDF (``@daft.func``) with no instrumentation: for the heavy read before the model."""
    import daft

    if fn is None:
        return lambda f: daft.func(f, return_dtype=return_dtype)
    return daft.func(fn, return_dtype=return_dtype)


# ---------------------------------------------------------------------------------------------------
# Collectors on the driver side


def _merge(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split events into finished calls and calls still running (started with no end or failure yet)."""
    ended = {e["key"]: e for e in events if e.get("event") == "end"}
    done = set(ended) | {e["key"] for e in events if e.get("event") in ("failed", "halved")}
    running = [e for e in events if e.get("event") == "start" and e["key"] not in done]
    return list(ended.values()), running


def split_calls(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(finished calls, running calls)`` of a list of records (see the collectors' ``snapshot``), without a
    watched UDF's windows of rows (:class:`CallWindow`), which are progress, not calls."""
    calls, running = _merge(events)
    return [c for c in calls if not c.get("window")], running


def records_dropped(events: list[dict[str, Any]], *, query_finished: bool) -> int:
    """At least how many call records never reached the driver.

    Two views, the larger kept: the drop count each actor sends with its later records (the last one
    seen per actor), and, once the query finished, calls that reported a start but neither an end nor
    a failure (the count of an actor's very last dropped record has no later record to ride on).
    """
    counted: dict[str, int] = {}
    for e in events:
        if e.get("event") != "start" and isinstance(e.get("dropped"), int):
            counted[str(e.get("actor"))] = max(counted.get(str(e.get("actor")), 0), e["dropped"])
    unfinished = len(_merge(events)[1]) if query_finished else 0
    return max(sum(counted.values()), unfinished)


def _failed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls that raised (one record per call)."""
    return list({e["key"]: e for e in events if e.get("event") == "failed"}.values())


def _halved(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls that ran out of memory and were run again in halves (:func:`recorded_call`)."""
    return list({e["key"]: e for e in events if e.get("event") == "halved"}.values())


def _ready(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Actors that finished ``__init__``: one record per actor process (a restarted actor adds one)."""
    return sorted((e for e in events if e.get("event") == "ready"), key=lambda e: e["end"])


def _process_start(fallback: float) -> float:
    """When this process was created (Ray may hand an actor a worker it started earlier), else ``fallback``."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # psutil missing or the process table unreadable: the init start is the best we know
        return fallback


# A spool directory is named for the driver that made it, so one a killed driver left (SIGKILL runs no cleanup)
# is known as stale and removed by the next run on this machine.
SPOOL_PREFIX = "daftscale-udf-"
_SPOOL_RE = re.compile(re.escape(SPOOL_PREFIX) + r"(?P<pid>\d+)-")


def _remove_stale_spools() -> None:
    """Remove the spool directories of drivers that are no longer running."""
    from daftscale.output import pid_alive

    with contextlib.suppress(OSError):
        for entry in os.scandir(tempfile.gettempdir()):
            match = _SPOOL_RE.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False) and not pid_alive(int(match.group("pid"))):
                shutil.rmtree(entry.path, ignore_errors=True)


class SpoolCollector:
    """Records from UDF actors on this machine, through JSON-lines files in a temporary directory.

    ``ray=True`` for Ray actors on a host-local cluster: they name their node and actor by Ray's ids.
    """

    def __init__(self, *, ray: bool = False) -> None:
        _remove_stale_spools()
        self.dir = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-")
        self.faults = faults.active()
        self.sink: dict[str, Any] = {"kind": "spool", "dir": self.dir, "faults": sorted(self.faults), "ray": ray}
        self.failed: list[dict[str, Any]] = []
        self.ready: list[dict[str, Any]] = []
        self.halved: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._offsets: dict[str, int] = {}  # bytes of whole lines read so far, per file
        self._lock = threading.Lock()  # a watcher thread may read while the run's loop does

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(finished calls, running calls)``; afterwards :attr:`failed` holds the calls that raised,
        :attr:`ready` the actors that finished ``__init__`` and :attr:`events` every record read.

        Each snapshot reads on from where the last one stopped, so a long run's progress line does not
        re-read every record twice a second.
        """
        if "snapshot" in self.faults:
            raise faults.InjectedFault("snapshot: the call records cannot be read (DAFTSCALE_FAULTS)")
        with self._lock:
            self._read_new()
            self.failed, self.ready, self.halved = _failed(self.events), _ready(self.events), _halved(self.events)
            return _merge(self.events)

    def _read_new(self) -> None:
        for path in sorted(glob.glob(os.path.join(self.dir, "*.jsonl"))):
            try:
                with open(path, "rb") as handle:
                    handle.seek(self._offsets.get(path, 0))
                    chunk = handle.read()
            except OSError:
                continue
            # A line being written right now has no newline yet: leave it for the next snapshot.
            whole = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[path] = self._offsets.get(path, 0) + len(whole)
            for line in whole.splitlines():
                with contextlib.suppress(json.JSONDecodeError):
                    self.events.append(json.loads(line))

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


class RayCollector:
    """Records from UDF actors anywhere in the Ray cluster, through one named actor (no CPU reserved)."""

    def __init__(self) -> None:
        import ray

        @ray.remote(num_cpus=0)
        class _Collector:
            def __init__(self) -> None:
                self.events: list[dict[str, Any]] = []

            def record(self, event: dict[str, Any]) -> None:
                self.events.append(event)

            def events_since(self, index: int) -> list[dict[str, Any]]:
                return self.events[index:]

        self.name = f"daftscale-collector-{uuid.uuid4().hex[:8]}"
        self._actor = _Collector.options(name=self.name, namespace=RAY_NAMESPACE).remote()
        self._read = 0  # records fetched so far, all runs together
        self.answered = False  # until a snapshot has read from it
        self.restart()

    def restart(self) -> None:
        """Collect the records of a new run: a collector kept by a session serves each of its runs in turn.

        Each run's sink has its own ``run`` id, which its UDF actors stamp on every record, so a record a
        previous run's actor sends late is not counted in this one. The actor keeps every run's records
        (a session's runs are few, their records small), so reading on from the last one read is exact.
        """
        self.run = uuid.uuid4().hex[:8]
        self.events: list[dict[str, Any]] = []
        self.faults = faults.active()
        self.sink: dict[str, Any] = {"kind": "ray", "name": self.name, "run": self.run, "faults": sorted(self.faults)}
        self.failed: list[dict[str, Any]] = []
        self.ready: list[dict[str, Any]] = []
        self.halved: list[dict[str, Any]] = []

    def answers(self, timeout_s: float = 10.0) -> bool:
        """Whether the collector actor answers (a session checks its kept one before each run).

        True without asking until it has answered once: a new actor may still be starting, and waiting
        for it here would hold up the run it is being started for (its first snapshot waits instead).
        """
        import ray

        if not self.answered:
            return True
        try:
            ray.get(self._actor.events_since.remote(self._read), timeout=timeout_s)
        except Exception:  # dead, or its node gone: the session starts another
            return False
        return True

    def snapshot(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """``(finished calls, running calls)``; afterwards :attr:`failed` holds the calls that raised,
        :attr:`ready` the actors that finished ``__init__`` and :attr:`events` every record read."""
        import ray

        if "snapshot" in self.faults:
            raise faults.InjectedFault("snapshot: the call records cannot be read (DAFTSCALE_FAULTS)")
        new = ray.get(self._actor.events_since.remote(self._read), timeout=30)
        self.answered = True
        self._read += len(new)
        self.events += [e for e in new if e.get("run", self.run) == self.run]
        self.failed, self.ready, self.halved = _failed(self.events), _ready(self.events), _halved(self.events)
        return _merge(self.events)

    def close(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self._actor)


def make_collector(runner: str, *, host_local: bool = False) -> SpoolCollector | RayCollector:
    """The collector for a run: a Ray actor on a Ray cluster that spans hosts, a spool directory on the
    native runner and on a Ray cluster whose nodes all run on this host (``host_local``)."""
    if runner == "ray" and not host_local:
        return RayCollector()
    return SpoolCollector(ray=runner == "ray")
