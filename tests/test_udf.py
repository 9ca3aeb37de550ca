"""actor_udf on the shared Ray cluster: every call recorded with real intervals, batch size and pool honoured."""

from __future__ import annotations

import sys
import time

import daft
import pytest
import ray.cloudpickle
from daft.pickle import cloudpickle as daft_cloudpickle

from daftscale.cluster import ClusterSpec
from daftscale.plan import plan
from daftscale.profile import profile_numbers
from daftscale.udf import RayCollector, actor_udf, recording

pytestmark = pytest.mark.ray

# Ray workers cannot import this test module, so its classes travel by value (as a pipeline file's do).
daft_cloudpickle.register_pickle_by_value(sys.modules[__name__])
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


class Doubler:
    """A plain class: daftscale must build the Daft UDF around it."""

    def __init__(self, factor: int = 2, sleep_s: float = 0.0) -> None:
        self.factor = factor
        self.sleep_s = sleep_s

    def __call__(self, xs: list[int]) -> list[int]:
        assert isinstance(xs, list)  # plain Python values, not a daft.Series
        time.sleep(self.sleep_s)
        return [x * self.factor for x in xs]


def _plan(concurrency: int, batch_size: int):
    return plan(
        profile_numbers(200, 8), ClusterSpec(nodes=2, cpus_per_node=2), concurrency=concurrency, batch_size=batch_size
    )


def test_every_call_recorded_with_real_intervals(ray_cluster) -> None:
    collector = RayCollector()
    try:
        with recording(collector.sink):
            model = actor_udf(
                Doubler, _plan(2, 16), return_dtype=daft.DataType.int64(), init_kwargs={"factor": 3, "sleep_s": 0.02}
            )
        df = daft.from_pydict({"x": list(range(200))}).into_partitions(4)
        out = df.with_column("y", model(df["x"])).to_pydict()
        calls, running = collector.snapshot()
    finally:
        collector.close()
    assert sorted(out["y"]) == [3 * x for x in range(200)]
    assert sum(c["rows"] for c in calls) == 200 and not running
    assert all(0 < c["rows"] <= 16 for c in calls)
    assert len({c["actor"] for c in calls}) <= 2
    # Real intervals: each call slept 20 ms inside the measured window.
    assert all(c["end"] - c["start"] >= 0.019 for c in calls)
    assert all(len(c["node"]) == 8 for c in calls)


def test_without_a_run_it_is_a_plain_udf() -> None:
    model = actor_udf(Doubler, _plan(1, 8), return_dtype=daft.DataType.int64())
    df = daft.from_pydict({"x": [1, 2, 3]})
    assert sorted(df.with_column("y", model(df["x"])).to_pydict()["y"]) == [2, 4, 6]


def test_rejects_instances_and_missing_methods() -> None:
    with pytest.raises(TypeError, match="needs a class"):
        actor_udf(Doubler(), _plan(1, 8), return_dtype=daft.DataType.int64())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="no method 'predict'"):
        actor_udf(Doubler, _plan(1, 8), return_dtype=daft.DataType.int64(), method="predict")


@pytest.mark.parametrize(("cpus", "gpus"), [(1.5, 0.5), (2.0, 0.0)])
def test_plan_udf_passes_its_resources_to_daft(cpus: float, gpus: float) -> None:
    """What Daft itself will ask Ray for (its optimised plan's resource request), not daftscale's own text."""
    from dataclasses import replace

    from daft.context import get_context

    p = replace(_plan(2, 8), udf_cpus=cpus, udf_gpus=gpus)
    model = p.udf(Doubler, return_dtype=daft.DataType.int64())
    df = daft.from_pydict({"x": [1, 2]})
    text = df.with_column("y", model(df["x"]))._builder.optimize(get_context().daft_execution_config).pretty_print()
    request = text.split("Resource request = {", 1)[1].split("}", 1)[0]
    asked = dict(part.strip().split(" = ") for part in request.split(","))
    assert float(asked["num_cpus"]) == cpus
    assert float(asked.get("num_gpus", 0)) == gpus
    assert "batch_size = 8" in text and "concurrency = 2" in text


def test_a_spool_snapshot_reads_on_from_the_last_and_leaves_a_line_being_written() -> None:
    """The spool collector reads only what was added since its last snapshot, and a line with no newline
    yet (an actor writing it now) waits for the next one instead of being lost or misread."""
    import json
    import os

    from daftscale.udf import SpoolCollector

    collector = SpoolCollector(ray=True)
    try:
        assert collector.sink["kind"] == "spool" and collector.sink["ray"] is True
        path = os.path.join(collector.dir, "123-abcd.jsonl")
        call = {"event": "end", "key": "k1", "actor": "a", "node": "n", "start": 0.0, "end": 1.0, "rows": 5}
        second = {**call, "key": "k2", "rows": 7}
        with open(path, "w") as handle:
            handle.write(json.dumps(call) + "\n" + json.dumps(second)[:20])
        calls, _ = collector.snapshot()
        assert [c["key"] for c in calls] == ["k1"]
        with open(path, "a") as handle:
            handle.write(json.dumps(second)[20:] + "\n")
        calls, _ = collector.snapshot()
        assert sorted(c["key"] for c in calls) == ["k1", "k2"] and len(collector.events) == 2
    finally:
        collector.close()


class _Decoder:
    """Runs out of memory (as a GPU model raises it) on a call of more than ``limit`` rows."""

    def __init__(self, limit: int, kind: str) -> None:
        self.limit, self.kind = limit, kind

    def __call__(self, values: daft.Series) -> object:
        import numpy as np
        import pyarrow as pa

        if len(values) > self.limit:
            raise MemoryError(f"out of memory: {len(values)} rows")
        plus = [x + 1 for x in values.to_pylist()]
        return {
            "list": plus,
            "numpy": np.array(plus),
            "arrow": pa.array(plus),
            "series": daft.Series.from_pylist(plus),
        }[self.kind]


@pytest.mark.parametrize("kind", ["list", "numpy", "arrow", "series"])
def test_a_cost_probe_call_that_runs_out_of_memory_is_run_again_in_halves(kind: str) -> None:
    from daftscale.udf import SpoolCollector, recorded_call, recorder_for

    collector = SpoolCollector()
    try:
        recorder = recorder_for({**collector.sink, "halve_out_of_memory": True}, "Decoder")
        result = recorded_call(recorder, _Decoder(4, kind), (daft.Series.from_pylist(list(range(10))),), {})
        values = result.to_pylist() if hasattr(result, "to_pylist") else list(result)
        assert type(result) is type(_Decoder(4, kind)(daft.Series.from_pylist([0])))
        assert values == list(range(1, 11)), "every row once, in order"
        calls, running = collector.snapshot()
        # 10 rows ran out, then 5 (its first half) did; 2 + 3 and the second half's 2 + 3 fitted.
        assert sorted(c["rows"] for c in collector.halved) == [5, 5, 10]
        assert all("MemoryError" in c["error"] for c in collector.halved)
        assert sorted(c["rows"] for c in calls) == [2, 2, 3, 3] and not running and not collector.failed
    finally:
        collector.close()


def test_outside_a_cost_probe_a_call_that_runs_out_of_memory_fails() -> None:
    from daftscale.udf import SpoolCollector, recorded_call, recorder_for

    collector = SpoolCollector()
    try:
        recorder = recorder_for(collector.sink, "Decoder")
        with pytest.raises(MemoryError):
            recorded_call(recorder, _Decoder(4, "list"), (daft.Series.from_pylist(list(range(10))),), {})
        # A single row that does not fit fails even in a probe: there is nothing left to halve.
        probing = recorder_for({**collector.sink, "halve_out_of_memory": True}, "Decoder")
        with pytest.raises(MemoryError):
            recorded_call(probing, _Decoder(0, "list"), (daft.Series.from_pylist([1, 2]),), {})
        collector.snapshot()
        assert sorted(c["rows"] for c in collector.failed) == [1, 10]
        assert [c["rows"] for c in collector.halved] == [2]
    finally:
        collector.close()


def test_a_spool_directory_left_by_a_killed_driver_is_removed_by_the_next_one(tmp_path) -> None:
    # SIGKILL runs no cleanup: its spool directory, named for its pid, is removed by the next collector made.
    import os
    import subprocess
    import tempfile

    from daftscale.udf import SPOOL_PREFIX, SpoolCollector

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{dead.pid}-")
    live = tempfile.mkdtemp(prefix=f"{SPOOL_PREFIX}{os.getpid()}-")
    collector = SpoolCollector()
    try:
        assert not os.path.exists(stale) and os.path.isdir(live)
        assert os.path.basename(collector.dir).startswith(f"{SPOOL_PREFIX}{os.getpid()}-")
    finally:
        collector.close()
        os.rmdir(live)
    assert not os.path.exists(collector.dir)
