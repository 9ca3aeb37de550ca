"""The simulator against real runs it was not calibrated on: calibrate on one run of a join over many
small, uneven Parquet files, predict a run of another batch size, run it, compare.

The UDF is a synthetic stand-in for a model: ``sleep(fixed + per_row × rows)`` per call, the cost shape
of a GPU model call. Both runs are real (Daft on the shared Ray test cluster).
"""

from __future__ import annotations

import textwrap
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daftscale.run import run
from daftscale.simulate import costs_from_report, plan_from_report, simulate

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# The bar for the held-out join case: the predicted wall time within 25 % of the measured one
# (its first miss was 31.4 s predicted for a 76.0 s run, 752 full batches assumed for 10,098 fragments);
# here the wall time after the actor pool is ready (see the test).
WALL_TOLERANCE = 0.25
# Two runs of the same calibration plan, before and after the held-out run, closer than this: the load held.
LOAD_STABLE = 0.20
# The number of UDF calls is no timing: it depends on how Daft cuts the join's output, and the fragments'
# mean size carries over from the calibration run; 15 % allows for their spread.
CALLS_TOLERANCE = 0.15

PIPELINE = """
    import time
    import daft, daftscale

    FILES = {files!r}

    class Model:
        def __call__(self, xs: list[int]) -> list[int]:
            time.sleep(0.01 + 0.002 * len(xs))  # a synthetic model: 10 ms per call + 2 ms per row
            return [x + 1 for x in xs]

    @daftscale.pipeline(concurrency=2)
    def build(plan):
        facts = daft.read_parquet(FILES)
        dims = daft.from_pydict({{"k": list(range(7)), "w": [k * 10 for k in range(7)]}})
        df = facts.join(dims, on="k")
        df = plan.apply(df)
        model = plan.udf(Model, return_dtype=daft.DataType.int64())
        return df.with_column("y", model(df["x"]))
"""


def _join_pipeline(tmp_path) -> str:
    files = []
    for i in range(50):
        rows = 4 + (i * 37) % 41  # 4 to 44 rows: uneven, deterministic
        path = tmp_path / f"part-{i:03d}.parquet"
        pq.write_table(pa.table({"x": list(range(rows)), "k": [j % 7 for j in range(rows)]}), path)
        files.append(str(path))
    path = tmp_path / "join_pipe.py"
    path.write_text(textwrap.dedent(PIPELINE).format(files=files))
    return str(path)


def _stage_s(report) -> float:
    """The UDF stage, first call to last: printed beside the prediction's, not compared (on a loaded
    2-core machine it swings by tens of percent between two runs alike)."""
    return max(c["end"] for c in report.udf_calls) - min(c["start"] for c in report.udf_calls)


def test_join_over_small_files_predicted_from_another_batch_size(tmp_path) -> None:
    path = _join_pipeline(tmp_path)
    # The prediction cannot know that the machine's load changed while it ran (measured with the quick bench
    # beside the suite: the same held-out run took 17.3 s and 5.5 s after the pool's start in two attempts,
    # while the simulator replayed its calibration run within 7 % both times). So each attempt brackets the
    # held-out run between two calibration runs, and is judged only when those two agree within
    # LOAD_STABLE: the load held. Up to three attempts; none with a steady load is a skip that says so.
    errors = []
    for _attempt in range(3):
        error = _predict_held_out(path)
        if error is None:
            continue
        if abs(error) <= WALL_TOLERANCE:
            return
        errors.append(error)
    if not errors:
        pytest.skip("the machine's load shifted during every attempt: the prediction could not be judged")
    pytest.fail(f"the held-out run's time after the pool's start was off by {errors} (tolerance {WALL_TOLERANCE:.0%})")


def _after_pool_start(report) -> float:
    return report.wall_s - report.actor_startup_s


def _predict_held_out(path: str) -> float | None:
    """Calibrate on a B=16 run, predict a B=48 run, run it, run B=16 again; the relative error of the time
    after the pool's start, or None when the two B=16 runs disagree (the load changed during the attempt)."""
    # calibrate off: this is the formula plan as made without measuring (the fragmenting one), which the
    # simulator is calibrated on; run's own calibration would add the merge that removes the fragments.
    calibration = run(path, runner="ray", progress=False, batch_size=16, calibrate="off")
    assert calibration.rows_out == calibration.rows_in
    costs = costs_from_report(calibration.to_dict())
    plan, cluster = plan_from_report(calibration.to_dict())
    held_out_plan = replace(plan, batch_size=48)
    predicted = simulate(held_out_plan, cluster, costs=costs)

    held_out = run(path, runner="ray", progress=False, plan=held_out_plan)
    assert held_out.plan["batch_size"] == 48 and held_out.rows_out == held_out.rows_in
    predicted_stage = predicted.makespan_s - predicted.stages["startup"] - predicted.stages["tail"]
    predicted_stage -= predicted.first_call_s - predicted.stages["startup"] - predicted.stages["shuffle"]
    measured_stage = _stage_s(held_out)
    mean_rows = sum(c["rows"] for c in held_out.udf_calls) / len(held_out.udf_calls)
    print(
        f"calibration B=16: {calibration.batches} calls, delivered rows/call fitted "
        f"{costs.delivered_rows_per_call}; held-out B=48: predicted {predicted.batches} calls, UDF stage "
        f"{predicted_stage:.2f} s, wall {predicted.makespan_s:.2f} s; measured {held_out.batches} calls of "
        f"{mean_rows:.1f} rows, UDF stage {measured_stage:.2f} s, wall {held_out.wall_s:.2f} s"
    )
    # The join hands the UDF fragments of a few rows whatever B is: the calls follow them, not B.
    assert mean_rows < 48 / 4
    assert predicted.batches == pytest.approx(held_out.batches, rel=CALLS_TOLERANCE)
    # Wall time after the actor pool was ready: the pool's start is Ray starting processes, which on a
    # loaded 2-core machine takes seconds more or less from one run to the next (the model's start-up is
    # the calibration run's); what follows is the work the simulator predicts from the plan.
    assert held_out.actor_startup_s > 0
    predicted_after = predicted.makespan_s - predicted.stages["startup"] - predicted.stages["shuffle"]
    measured_after = held_out.wall_s - held_out.actor_startup_s
    # The calibration run replayed through the simulator, printed only: how far the model misses the very
    # run it was fitted on tells a load shift between the two runs (that one close, the held-out far) from
    # a miss of the model itself (both far).
    replayed = simulate(plan, cluster, costs=costs)
    print(
        f"after the pool's start: predicted {predicted_after:.2f} s, measured {measured_after:.2f} s; calibration "
        f"run replayed {replayed.makespan_s - replayed.stages['startup'] - replayed.stages['shuffle']:.2f} s, "
        f"measured {calibration.wall_s - calibration.actor_startup_s:.2f} s"
    )
    # Without the fragments (full batches of 48, as before Costs.delivered_rows_per_call) the same costs
    # predict a fraction of the calls: the calls check above is what the field buys.
    full = simulate(held_out_plan, cluster, costs=replace(costs, delivered_rows_per_call=None))
    assert full.batches < 0.5 * held_out.batches
    again = run(path, runner="ray", progress=False, batch_size=16, calibrate="off")
    before, after = _after_pool_start(calibration), _after_pool_start(again)
    print(f"calibration runs after the pool's start: {before:.2f} s before the held-out run, {after:.2f} s after")
    if abs(after / before - 1) > LOAD_STABLE:
        return None
    return predicted_after / measured_after - 1
