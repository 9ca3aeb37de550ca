"""Figures derived from a run's UDF call records: actor utilisation, the UDF's cost and memory fits,
actor start times and the throughput curve. Pure functions over the records' dicts; the report
(:mod:`daftscale.report`) stores what they return.
"""

from __future__ import annotations

from typing import Any

from daftscale.fit import fit_line


def merged_busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Seconds covered by the union of intervals (an actor's overlapping calls count once).

    >>> merged_busy_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0)])
    3.0
    """
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start  # type: ignore[operator]
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start  # type: ignore[operator]
    return total


def actor_utilization(calls: list[dict[str, Any]], actors: int) -> tuple[float, float]:
    """``(utilisation, stage span)``: summed busy time of the actors / (actors × span of the UDF stage).

    The span runs from the first call's start to the last call's end, so an actor that sat idle
    (no partition reached it, or it waited on a straggler) lowers the figure.

    >>> calls = [{"actor": "a", "start": 0.0, "end": 2.0}, {"actor": "b", "start": 0.0, "end": 1.0}]
    >>> actor_utilization(calls, 2)
    (0.75, 2.0)
    >>> actor_utilization(calls, 4)   # two actors of a pool of four never got work
    (0.375, 2.0)
    """
    if not calls or actors <= 0:
        return 0.0, 0.0
    span = max(c["end"] for c in calls) - min(c["start"] for c in calls)
    if span <= 0:
        return 0.0, 0.0
    by_actor: dict[str, list[tuple[float, float]]] = {}
    for c in calls:
        by_actor.setdefault(c["actor"], []).append((c["start"], c["end"]))
    busy = sum(merged_busy_seconds(v) for v in by_actor.values())
    # An actor replaced mid-run (Ray restarts it) adds a second name for the same slot: never above 1.
    return min(1.0, busy / (max(actors, 1) * span)), span


def actor_pools(plan_inputs: dict[str, Any], calls: list[dict[str, Any]]) -> int:
    """The actor pools a run had, one per model: the plan's ``models`` (a pipeline's several actor UDFs, each
    given the plan's concurrency), else the UDFs whose calls were timed (models kept at their authors'
    settings are not divided by the plan, so it records none), and at least one.

    >>> calls = [{"udf": "Embed", "actor": "a"}, {"udf": "Rank", "actor": "b"}]
    >>> actor_pools({"models": 2}, []), actor_pools({}, calls), actor_pools({}, [])
    (2, 2, 1)
    """
    planned = int(plan_inputs.get("models") or 0)
    return max(1, planned or len({c["udf"] for c in calls if c.get("udf")}))


def fit_udf_cost(calls: list[dict[str, Any]]) -> dict[str, float] | None:
    """Least-squares fit of ``seconds = seconds_per_batch + seconds_per_row * rows`` over the calls.

    ``None`` when the calls do not pin both numbers down (fewer than two distinct batch sizes).
    Negative estimates from noise are clamped to 0.

    >>> fit_udf_cost([{"rows": 10, "start": 0, "end": 0.03}, {"rows": 30, "start": 0, "end": 0.07}])
    {'seconds_per_row': 0.002, 'seconds_per_batch': 0.01}
    """
    points = [(float(c["rows"]), float(c["end"] - c["start"])) for c in calls if c.get("rows")]
    line = fit_line([x for x, _ in points], [y for _, y in points])
    if line is None:
        return None
    mean_y = sum(y for _, y in points) / len(points)
    mean_x = sum(x for x, _ in points) / len(points)
    slope = max(0.0, line[1])
    intercept = max(0.0, mean_y - slope * mean_x)
    return {"seconds_per_row": round(slope, 9), "seconds_per_batch": round(intercept, 9)}


def fit_udf_memory_per_row(calls: list[dict[str, Any]]) -> float | None:
    """Bytes a UDF call needs per row, from the calls' measured peak memory (``memory_bytes``); None unmeasured.

    The largest peak per row among the larger half of the calls by rows. Largest, because an allocator that
    keeps freed memory makes an actor's later calls look cheaper than its first (memory is the side to
    overestimate); the larger calls, because a small call's fixed part (the hand-over, scratch space) is
    not per row.

    >>> fit_udf_memory_per_row([{"rows": 2, "memory_bytes": 6 << 20}, {"rows": 16, "memory_bytes": 17 << 20},
    ...                         {"rows": 16, "memory_bytes": 0}]) / 2**20
    1.0625
    >>> fit_udf_memory_per_row([{"rows": 8}]) is None
    True
    """
    points = [(int(c["rows"]), float(c["memory_bytes"])) for c in calls if c.get("rows") and "memory_bytes" in c]
    if not points:
        return None
    sizes = sorted(x for x, _ in points)
    median = sizes[(len(sizes) - 1) // 2]
    return round(max(y / x for x, y in points if x >= median), 1)


def work_utilization(calls: list[dict[str, Any]], actors: int, seconds_per_batch: float) -> float:
    """The share of the actors' time spent on per-row work: busy time less the fitted per-call cost of each call,
    over ``actors`` × the UDF stage's span. :func:`actor_utilization` counts a call's fixed cost as busy;
    this does not, so an actor busy on 4-row calls that are mostly per-call overhead does not look well used.

    >>> calls = [{"actor": "a", "start": 0.0, "end": 1.0}, {"actor": "a", "start": 1.0, "end": 2.0}]
    >>> work_utilization(calls, 1, 0.75)   # each 1 s call: 0.75 s fixed cost, 0.25 s of work
    0.25
    """
    _, span = actor_utilization(calls, actors)
    if span <= 0:
        return 0.0
    work = sum(max(0.0, float(c["end"]) - float(c["start"]) - seconds_per_batch) for c in calls)
    return min(1.0, work / (max(actors, 1) * span))


def actor_starts(ready: list[dict[str, Any]], run_start: float) -> list[dict[str, Any]]:
    """Each actor's start-up relative to ``run_start``: process created (``spawned``, clipped to 0 for a
    worker Ray had started before the run), ``__init__`` begun (``start``) and done (``end``).

    >>> actor_starts([{"actor": "a", "node": "n", "spawned": 90.0, "start": 101.0, "end": 103.5}], 100.0)
    [{'actor': 'a', 'node': 'n', 'spawned': 0.0, 'start': 1.0, 'end': 3.5}]
    """
    out = []
    for r in sorted(ready, key=lambda r: r["end"]):
        spawned = max(float(r.get("spawned", r["start"])) - run_start, 0.0)
        out.append(
            {
                "actor": str(r["actor"]),
                "node": str(r["node"]),
                "spawned": round(spawned, 6),
                "start": round(r["start"] - run_start, 6),
                "end": round(r["end"] - run_start, 6),
            }
        )
    return out


def throughput_curve(calls: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Cumulative rows through the UDF over time (seconds from run start), one point per finished call.

    >>> throughput_curve([{"end": 2.0, "rows": 5}, {"end": 1.0, "rows": 3}])
    [{'t': 0.0, 'rows': 0}, {'t': 1.0, 'rows': 3}, {'t': 2.0, 'rows': 8}]
    """
    points: list[dict[str, float]] = [{"t": 0.0, "rows": 0}]
    done = 0
    for c in sorted(calls, key=lambda c: c["end"]):
        done += int(c["rows"])
        points.append({"t": round(float(c["end"]), 6), "rows": done})
    return points


__all__ = [
    "actor_pools",
    "actor_starts",
    "actor_utilization",
    "fit_udf_cost",
    "fit_udf_memory_per_row",
    "merged_busy_seconds",
    "throughput_curve",
    "work_utilization",
]
