"""The stall watchdog: notice a run that stopped making progress, and stop what it left running.

A run makes progress when a UDF call starts or finishes, an actor becomes ready (its ``__init__``
returned), or a partition comes out of the query. :class:`StallWatch` is a check for the run's wait
loop: it reads the UDF call records (:mod:`daftscale.udf`) and fires once the run has gone longer
than :func:`stall_limit` without progress while the query is still running. That covers a model
stuck in a call (a lock, a wedged GPU), an actor whose ``__init__`` never returns, and actors that
loaded but never get a batch.

The limit adapts to the calls seen so far: ``max(floor, factor × longest call)``, and until a call
has finished and every planned actor is ready, at least ``factor × floor`` (a first call may load
weights or compile kernels, and batches may wait for an actor that is still starting). The floor is
``--stall-timeout`` (default :data:`~daftscale.config.DEFAULT_STALL_TIMEOUT_S`).

:func:`stop_stalled_query` ends the stuck query honestly: on Daft's native runner it terminates
Daft's UDF worker processes (children of this process), so Daft's query fails instead of waiting
forever; on Ray it kills the query's UDF actors. A UDF that Daft runs in a thread of this process
(Daft 0.7 does so for actor UDFs over non-Arrow columns, e.g. images) cannot be stopped from
outside: the CLI exits anyway (the query runs in a daemon thread) and says so.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from daftscale.config import DEFAULT_STALL_TIMEOUT_S, STALL_CALL_FACTOR
from daftscale.errors import ConfigError, RunError

T = TypeVar("T")

# report.json status of a run the watchdog stopped.
STATUS_STALLED = "failed: stalled"

# Command-line marker of Daft's native-runner UDF worker processes (``python -m daft.execution.udf_worker``).
DAFT_UDF_WORKER = "daft.execution.udf_worker"

# How long a terminated UDF worker gets to exit before it is killed.
TERMINATE_GRACE_S = 3.0

# A query before the run (profiling or counting the scaling input) calls no UDF, so it shows no progress
# to watch: it is given this many stall floors before it counts as stuck, and says every
# PREP_NOTICE_S that it is still waiting, so a slow profile is never a silent one.
PREP_STALL_FACTOR = 5
PREP_NOTICE_S = 30.0

# What the one known cause of a stuck profile is, for the error's fix (measured on Daft 0.7.26's Ray runner).
PREP_STUCK_HINT = (
    "Daft 0.7's Ray runner never finishes a limit after into_partitions, so if the pipeline calls "
    "into_partitions before plan.apply, move plan.apply before it"
)


def resolve_stall_timeout(value: float | int | str | None) -> float | None:
    """The watchdog's floor in seconds from the user's option; ``None`` when it is turned off (0).

    >>> resolve_stall_timeout(None)
    60.0
    >>> resolve_stall_timeout("2.5"), resolve_stall_timeout(0)
    (2.5, None)
    """
    if value is None:
        return DEFAULT_STALL_TIMEOUT_S
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(
            f"--stall-timeout must be a number of seconds, got {value!r}: pass e.g. 120, or 0 to turn the watchdog off"
        )
    return seconds or None


def stall_limit(floor_s: float, call_seconds: Iterable[float], factor: float = STALL_CALL_FACTOR) -> float:
    """Seconds without progress after which the run counts as stalled.

    ``max(floor, factor × longest call seen)``; before any call has finished, ``factor × floor``
    (nothing says yet how long a call takes, and a first call may load weights or compile kernels).

    >>> stall_limit(60, [])            # no call seen yet: room for a slow first call
    300.0
    >>> stall_limit(60, [0.05, 0.2])   # fast calls: the floor
    60.0
    >>> stall_limit(60, [30.0, 61.0])  # a model whose calls take a minute is not stalled after one
    305.0
    """
    longest = max((float(s) for s in call_seconds), default=None)
    if longest is None:
        return float(factor * floor_s)
    return float(max(floor_s, factor * longest))


def last_progress(
    since: float,
    calls: list[dict[str, Any]],
    running: list[dict[str, Any]],
    ready: list[dict[str, Any]],
    failed: list[dict[str, Any]],
) -> float:
    """The latest moment the run made progress: a call started or ended, an actor became ready.

    ``since`` (the query's start, or when rows last came out) is the earliest it can be.
    """
    stamps = [since]
    stamps += [float(c["end"]) for c in calls] + [float(f["end"]) for f in failed]
    stamps += [float(r["start"]) for r in running] + [float(r["end"]) for r in ready]
    return max(stamps)


def actor_states(
    calls: list[dict[str, Any]], running: list[dict[str, Any]], ready: list[dict[str, Any]], now: float, origin: float
) -> list[dict[str, Any]]:
    """What each actor that ever reported was doing: in a call (since when, on how many rows) or idle.

    Times are seconds after ``origin`` (the query's start), as in the report's ``udf_calls``.
    """
    actors: dict[str, dict[str, Any]] = {}

    def entry(record: dict[str, Any]) -> dict[str, Any]:
        name = str(record["actor"])
        return actors.setdefault(
            name,
            {"actor": name, "node": str(record.get("node", "")), "state": "idle", "calls": 0, "rows_done": 0},
        )

    for r in ready:
        entry(r)["ready_at_s"] = round(float(r["end"]) - origin, 3)
    for c in calls:
        state = entry(c)
        state["calls"] += 1
        state["rows_done"] += int(c["rows"])
        if float(c["start"]) >= state.get("_last", -math.inf):
            state["_last"] = float(c["start"])
            state["last_call_start_s"] = round(float(c["start"]) - origin, 3)
            state["last_call_rows"] = int(c["rows"])
    for r in running:
        state = entry(r)
        state["state"] = "in a call"
        state["last_call_start_s"] = round(float(r["start"]) - origin, 3)
        state["last_call_rows"] = int(r["rows"])
        state["in_call_for_s"] = round(now - float(r["start"]), 3)
    for state in actors.values():
        state.pop("_last", None)
    return sorted(actors.values(), key=lambda s: s["actor"])


class StallWatch:
    """A check for the run's wait loop: returns the stall message once the run stops making progress.

    ``rows_out`` reads the rows the query has returned so far (rows coming out count as progress);
    ``clock`` is injectable so tests can drive time.
    """

    def __init__(
        self,
        collector: Any,
        floor_s: float,
        *,
        started: float,
        concurrency: int,
        rows_out: Callable[[], int] = lambda: 0,
        gpus: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.collector = collector
        self.floor_s = floor_s
        self.started = started
        self.concurrency = concurrency
        self.gpus = gpus
        self._rows_out = rows_out
        self._clock = clock
        self._rows_seen = 0
        self._rows_moved_at = started
        self.fired = False
        self._fired_at: float | None = None
        self.limit_s = stall_limit(floor_s, [])
        self.idle_s = 0.0
        self._records: tuple[list[dict[str, Any]], list[dict[str, Any]]] = ([], [])

    def __call__(self) -> str | None:
        try:
            calls, running = self.collector.snapshot()
        except Exception:  # a slow collector is not a stall; the next check decides
            return None
        now = self._clock()
        rows = self._rows_out()
        if rows != self._rows_seen:
            self._rows_seen, self._rows_moved_at = rows, now
        self._records = (calls, running)
        ready, failed = list(self.collector.ready), list(self.collector.failed)
        self.limit_s = stall_limit(self.floor_s, [float(c["end"]) - float(c["start"]) for c in calls])
        if len(ready) < self.concurrency:
            # Actors are still starting (Daft starts each on its first batch, and batches may wait for it):
            # keep the start-up allowance until every planned actor is ready.
            self.limit_s = max(self.limit_s, stall_limit(self.floor_s, []))
        self.idle_s = now - last_progress(self._rows_moved_at, calls, running, ready, failed)
        if self.idle_s <= self.limit_s:
            return None
        self.fired = True
        self._fired_at = now
        return self.message(len(ready))

    def message(self, ready: int) -> str:
        calls, running = self._records
        if running:
            what = f"{len(running)} UDF call{'s' if len(running) != 1 else ''} running for over {self.idle_s:.0f} s"
        elif not calls and not ready:
            what = f"no UDF actor of {self.concurrency} became ready (its __init__ never returned, or never began)"
        elif not calls:
            what = f"{ready} UDF actor{'s' if ready != 1 else ''} ready but no batch reached them"
        else:
            what = f"no UDF call started or finished after {len(calls):,} calls"
        fix = "find what the model waits on (a lock, a wedged GPU, a queue)"
        fix += ", or raise --stall-timeout if calls are that slow"
        if self.gpus:
            fix += "; on a GPU see the README section 'GPU runs on the native runner'"
        return f"the run stalled: {what}, {self.idle_s:.0f} s without progress (limit {self.limit_s:.0f} s): {fix}"

    def state(self) -> dict[str, Any]:
        """The report's ``stall`` field: the limit, the silence that tripped it, and each actor's state."""
        calls, running = self._records
        ready = list(getattr(self.collector, "ready", []))
        now = self._fired_at if self._fired_at is not None else self._clock()
        actors = actor_states(calls, running, ready, now, self.started)
        return {
            "limit_s": round(self.limit_s, 3),
            "idle_s": round(self.idle_s, 3),
            "floor_s": self.floor_s,
            "actors_reported": len(actors),
            "actors_planned": self.concurrency,
            "actors": actors,
        }


def combine(*checks: Callable[[], str | None] | None) -> Callable[[], str | None] | None:
    """One check for the wait loop from several (``None`` ones left out): the first reason wins."""
    active = [c for c in checks if c is not None]
    if not active:
        return None

    def check() -> str | None:
        for c in active:
            reason = c()
            if reason:
                return reason
        return None

    return check


def daft_udf_workers(pid: int | None = None) -> list[Any]:
    """Daft's native-runner UDF worker processes under ``pid`` (default: this process), as psutil objects."""
    import psutil

    try:
        children = psutil.Process(pid or os.getpid()).children(recursive=True)
    except psutil.Error:
        return []
    found = []
    for proc in children:
        with contextlib.suppress(psutil.Error):
            if any(DAFT_UDF_WORKER in part for part in proc.cmdline()):
                found.append(proc)
    return found


def stop_stalled_query(runner: str) -> str:
    """End a stuck query's UDF workers so the query fails instead of waiting; returns what was done."""
    if runner == "native":
        import psutil

        workers = daft_udf_workers()
        for proc in workers:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(workers, timeout=TERMINATE_GRACE_S)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if workers:
            return f"terminated {len(workers)} Daft UDF worker process{'es' if len(workers) != 1 else ''}"
        # Daft 0.7 runs an actor UDF over non-Arrow columns (images, Python objects) in a thread of
        # this process: nothing outside it can stop that thread, only this process ending.
        return "the UDF runs in a thread of this process and cannot be stopped; it ends with the process"
    return kill_ray_actors()


def kill_ray_actors(classes: tuple[str, ...] = ("UDFActor",), what: str = "Daft UDF actor") -> str:
    """Kill this job's Daft UDF actors (class ``UDFActor``), or those of ``classes``, alive on the Ray cluster.

    Ray can kill an actor only through its handle, which Daft keeps to itself, so each actor's process
    is killed by pid from a zero-CPU task placed on its node (Ray then marks the actor dead). ``classes``
    names other actors' classes to kill (the benchmark's Ray Data peer: ``MapWorker(...)``), ``what`` them.
    """
    try:
        import ray

        # The GCS actor table (Ray's developer API): unlike ray.util.state it needs no dashboard, which a
        # local cluster started without one lacks.
        from ray._private.state import actors as actor_table
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())  # (the .job_id property is deprecated)
        table = actor_table(job_id=job, actor_state_name="ALIVE")
        targets = [
            (info["Address"]["NodeID"], int(info["Pid"]))
            for info in table.values()
            if info.get("Pid") and str(info.get("ActorClassName")).split("(")[0] in classes
        ]
    except Exception as exc:  # a joined cluster may refuse: say so rather than fail the report
        named = " and ".join(sorted(classes))
        return f"could not list the query's Ray actors ({type(exc).__name__}): kill its {named} actors by hand"

    @ray.remote(num_cpus=0)
    def kill_pid(pid: int) -> bool:
        import signal

        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            return False
        return True

    refs = []
    for node, pid in targets:
        strategy = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
        refs.append(kill_pid.options(scheduling_strategy=strategy).remote(pid))
    killed = 0
    with contextlib.suppress(Exception):
        killed = sum(bool(ok) for ok in ray.get(refs, timeout=30))
    return f"killed {killed} of {len(targets)} {what}{'s' if len(targets) != 1 else ''} on Ray"


__all__ = [
    "STATUS_STALLED",
    "StallWatch",
    "actor_states",
    "combine",
    "daft_udf_workers",
    "kill_ray_actors",
    "last_progress",
    "resolve_stall_timeout",
    "stall_limit",
    "stop_stalled_query",
]


def bounded_prep(
    work: Callable[[], T],
    *,
    what: str,
    floor_s: float | None,
    say: Callable[[str], None],
    notice_s: float = PREP_NOTICE_S,
) -> T:
    """Run ``work`` (a query before the run: no UDF calls to watch) and stop waiting for it when it is stuck.

    The query runs on a daemon thread while this one waits: every ``notice_s`` it says it is still
    ``what``, and past ``PREP_STALL_FACTOR × floor_s`` (``floor_s`` is ``--stall-timeout``; None waits
    for ever, as the watchdog does when turned off) it raises :class:`RunError`. Daft offers no way to
    cancel the stuck query, so its thread is left behind; the CLI exits anyway (a daemon thread) and a
    cluster the run started is shut down, which ends it.
    """
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:  # handed to the waiting thread, which raises it as its own
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="daftscale-prep", daemon=True)
    started = time.monotonic()
    thread.start()
    limit = None if floor_s is None else PREP_STALL_FACTOR * floor_s
    next_notice = notice_s
    while thread.is_alive():
        thread.join(0.2)
        waited = time.monotonic() - started
        if not thread.is_alive():
            break
        if limit is not None and waited > limit:
            raise RunError(
                f"{what} did not finish in {waited:.0f} s ({PREP_STALL_FACTOR} × --stall-timeout): Daft may be "
                f"stuck ({PREP_STUCK_HINT}), or the input is that slow to read (raise --stall-timeout)"
            )
        if waited >= next_notice:
            say(f"daftscale: still {what} after {waited:.0f} s")
            next_notice += notice_s
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]
