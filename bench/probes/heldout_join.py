"""Probe: a pipeline of the held-out kind, calibrated by ``daftscale run`` against Daft's default.

``python -m bench.probes.heldout_join [--files 300] [--rows 40000] [--repeats 2] [--out DIR]`` writes a
join over many small Parquet files of skewed sizes (the fact rows) and one small dimension file, and a
pipeline file: ``read_parquet(files).join(dim) → plan.apply → per-row step → model actor UDF → groupby``.
The model is a synthetic stand-in for a GPU model call: it sleeps 20 ms per call + 0.05 ms per row.

It starts a local 2 × 2 Ray cluster and runs, interleaved, ``--repeats`` times each:

- **no scaling step**: Daft's default, the pipeline's own batch size (64) and concurrency;
- **daftscale default**: ``daftscale run`` as a user gets it (calibration on a sample included);
- **formula, no calibration**: ``daftscale run --calibrate off`` (the formula plan as before calibration);
- ``budgetSECONDS`` (e.g. ``--cases budget120``): ``daftscale run --calibrate SECONDS``.

Each time counted is ``total_s`` from the report: from the start of probing to the query's end, so probe,
profile, calibration and planning all count. It prints a table of medians and the UDF's mean rows per call
against the plan's batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import textwrap
from typing import Any

PIPELINE = '''
    """Held-out kind: a join over many small skewed Parquet files → per-row step → model UDF → groupby."""
    import time

    import daft
    import daftscale


    class Model:
        def __call__(self, values: list[int]) -> list[int]:
            time.sleep(0.02 + 0.00005 * len(values))  # synthetic GPU model call: fixed + per-row cost
            return [v % 13 for v in values]


    @daft.func(return_dtype=daft.DataType.int64())
    def text_length(text: str) -> int:
        return len(text)  # the per-row step (a light parse)


    @daftscale.pipeline(batch_size=64, concurrency=4)
    def build(plan):
        facts = daft.read_parquet({facts!r})
        dim = daft.read_parquet({dim!r})
        df = facts.join(dim, on="k")
        df = plan.apply(df)
        df = df.with_column("n", text_length(df["text"]))
        model = plan.udf(Model, return_dtype=daft.DataType.int64())
        df = df.with_column("label", model(df["n"]))
        return df.groupby("category").agg(daft.col("label").sum().alias("labels"), daft.col("n").count().alias("rows"))
'''


def make_data(root: str, files: int, rows: int, seed: int = 7) -> tuple[str, str]:
    """``files`` fact files whose sizes are skewed (a few large, many small) summing to about ``rows``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    facts = os.path.join(root, "facts")
    dim_path = os.path.join(root, "dim.parquet")
    if os.path.isdir(facts) and os.path.exists(dim_path):
        return os.path.join(facts, "*.parquet"), dim_path
    os.makedirs(facts, exist_ok=True)
    rng = np.random.default_rng(seed)
    weights = rng.lognormal(mean=0.0, sigma=1.2, size=files)
    sizes = np.maximum(1, np.round(weights / weights.sum() * rows)).astype(int)
    start = 0
    for i, size in enumerate(sizes):
        keys = np.arange(start, start + size) % 5000
        texts = [f"row {j} " + "x" * int(j % 60) for j in range(start, start + size)]
        pq.write_table(pa.table({"k": keys, "text": texts}), os.path.join(facts, f"part-{i:04d}.parquet"))
        start += size
    pq.write_table(pa.table({"k": np.arange(5000), "category": np.arange(5000) % 37}), dim_path)
    return os.path.join(facts, "*.parquet"), dim_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probes.heldout_join", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cases", default="none,default,formula")
    parser.add_argument("--out", default=os.path.join(tempfile.gettempdir(), "daftscale-heldout"))
    args = parser.parse_args(argv)
    os.environ.setdefault("DAFT_PROGRESS_BAR", "0")
    os.makedirs(args.out, exist_ok=True)
    facts, dim = make_data(os.path.join(args.out, f"data-{args.files}-{args.rows}"), args.files, args.rows)
    path = os.path.join(args.out, "pipeline.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(textwrap.dedent(PIPELINE).format(facts=facts, dim=dim))

    from daftscale.calibrate import no_scaling_step
    from daftscale.cluster import local_cluster
    from daftscale.pipeline import load_pipeline, probe
    from daftscale.plan import plan as make_plan
    from daftscale.profile import profile_dataframe
    from daftscale.run import run, runtime

    pipe = load_pipeline(path)
    results: dict[str, list[dict[str, Any]]] = {}
    with local_cluster(2, 2) as cluster_handle:
        os.environ["RAY_ADDRESS"] = cluster_handle.address
        with runtime("ray", ray_address=cluster_handle.address) as cluster:
            for repeat in range(args.repeats):
                for case in args.cases.split(","):
                    if case == "none":
                        # Daft's default: the formula plan's numbers with the decision "no scaling step".
                        data = profile_dataframe(probe(pipe).scaling_input)
                        given = no_scaling_step(make_plan(data, cluster, **pipe.planner_kwargs), "probe baseline")
                        report = run(pipe, ray_address=cluster_handle.address, plan=given, progress=False)
                    elif case == "default":
                        report = run(pipe, ray_address=cluster_handle.address, progress=False)
                    elif case.startswith("budget"):
                        # "budget120": calibration with a budget of 120 s (daftscale run --calibrate 120).
                        seconds = float(case.removeprefix("budget"))
                        report = run(pipe, ray_address=cluster_handle.address, progress=False, calibrate=seconds)
                    else:
                        report = run(pipe, ray_address=cluster_handle.address, progress=False, calibrate="off")
                    calls = report.udf_calls
                    row = {
                        "case": case,
                        "repeat": repeat,
                        "total_s": report.total_s,
                        "wall_s": report.wall_s,
                        "calibration_s": report.calibration_s,
                        "plan_s": report.plan_s,
                        "batch_size": report.plan["batch_size"],
                        "calls": len(calls),
                        "mean_rows_per_call": round(sum(c["rows"] for c in calls) / max(len(calls), 1), 1),
                        "utilization": report.actor_utilization,
                        "work_utilization": report.actor_work_utilization,
                        "decision": (report.plan.get("decision") or {}).get("scaling_step"),
                        "scaling": report.summary()[1][1],
                    }
                    print(json.dumps(row), flush=True)
                    if (case == "default" or case.startswith("budget")) and repeat == 0:
                        print("\n".join((report.plan.get("calibration") or {}).get("lines") or []), flush=True)
                    results.setdefault(case, []).append(row)
    print("\n| case | total_s (median) | calibration_s | batch | mean rows/call | util (busy / work) |")
    print("|---|---|---|---|---|---|")
    for case, rows in results.items():
        med = statistics.median(r["total_s"] for r in rows)
        last = rows[-1]
        print(
            f"| {case} | {med:.1f} | {statistics.median(r['calibration_s'] for r in rows):.1f} | {last['batch_size']} "
            f"| {last['mean_rows_per_call']} | {last['utilization']:.0%} / {last['work_utilization']:.0%} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
