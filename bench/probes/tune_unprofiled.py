"""Probe: ``daftscale tune`` for a pipeline with no UDF profile, the path a CLI user takes.

``python -m bench.probes.tune_unprofiled [--workloads W2,W1] [--scale 1] [--repeats 2]`` starts the bench's
4 × 4 local cluster and, for each workload at ``--scale`` times its quick size:

1. tunes the pipeline as ``daftscale tune PIPELINE`` would, with no UDF profile (the formula plan then
   uses the default batch size), on the benchmark's 25 % sample and budget;
2. runs, interleaved, ``--repeats`` times on all the data: that formula plan (what ``daftscale run`` gives
   this pipeline), the tuned plan, and the benchmark's ``daftscale`` plan, made with a profile of the UDF.

It prints each plan's scaling step, median wall time and its ratio to the unprofiled formula plan's. The
benchmark's ``daftscale-tuned`` starts from the profiled plan, where the tuner's measured-costs candidate
has nothing to add; this shows what the candidate gives a user who has no profile.
"""

from __future__ import annotations

import os

from bench.configs import TUNE_SAMPLE
from bench.probes.common import bench_cluster, parse_args, print_walls, workload_at


def main(argv: list[str] | None = None) -> int:
    from daftscale.run import run
    from daftscale.tune import tune

    args = parse_args(__doc__, "python -m bench.probes.tune_unprofiled", argv, default_scale=1.0, workloads="W2,W1")
    with bench_cluster(args.out) as bench:
        for name in args.workloads:
            workload, pipe, udf_profile = workload_at(bench, name, args.scale)
            unprofiled = bench.planner_kwargs(workload, None)
            profiled = bench.planner_kwargs(workload, udf_profile)
            bench.settle()
            result = tune(
                pipe,
                runner="ray",
                sample=TUNE_SAMPLE,
                budget_s=bench.tune_budget_s,
                cache_dir=os.path.join(args.out, "tune-cache-unprofiled"),
                use_cache=False,
                progress=False,
                **unprofiled,
            )
            print(f"{name}: {workload.rows:,} rows; tuned in {result.elapsed_s:.1f} s: {result.summary()}", flush=True)
            for note in result.notes:
                print(f"  {note}", flush=True)
            # plan and planner options per configuration ("auto": planned by run, as `daftscale run` does)
            configs = {
                "formula, no UDF profile": ("auto", unprofiled),
                "tuned from it": (result.best, {}),
                "formula with a UDF profile": ("auto", profiled),
            }
            walls: dict[str, list[float]] = {config: [] for config in configs}
            steps: dict[str, str] = {}
            for repeat in range(args.repeats):
                for config, (plan_or_auto, kwargs) in configs.items():
                    bench.settle()
                    report = run(pipe, runner="ray", plan=plan_or_auto, progress=False, **kwargs)
                    walls[config].append(report.wall_s)
                    plan = report.plan
                    step = " + ".join(
                        ([f"{plan['partition_op']}({plan['partitions']})"] if plan["strategy"] == "shuffle" else [])
                        + ([f"into_batches({plan['into_batches']})"] if plan.get("into_batches") else [])
                    )
                    steps[config] = f"{step}, B={plan['batch_size']}"
                    print(
                        f"[{repeat}] {name} {config:28s} {steps[config]}: wall {report.wall_s:6.2f} s, rows "
                        f"{report.rows_in}→{report.rows_out}, util {report.actor_utilization:.2f}",
                        flush=True,
                    )
            print_walls(
                f"{name} plan",
                ["scaling step, batch"],
                {config: ([steps[config]], walls[config]) for config in configs},
                "formula, no UDF profile",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
