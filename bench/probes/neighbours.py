"""Probe: the formula plan against its neighbours on the full data, to see whether the tuner has room.

``python -m bench.probes.neighbours [--workloads W1,W2] [--scale 1] [--repeats 2]`` starts the bench's
4 × 4 local cluster, makes the ``daftscale`` configuration's plan for each workload at ``--scale`` times
its quick size (the UDF profiled as the benchmark does), and runs that plan and its neighbours on the
tuner's grid (batch size and partitions or ``into_batches`` rows per task, ×½ ×1 ×2 each) on all the
data, interleaved, ``--repeats`` times. It prints each candidate's median wall time and its ratio to the
formula plan's.

The tuner measures these candidates on a sample; this runs them on everything, so it says what a perfect
tuner could gain over the formula plan on this machine. A probe, not the benchmark (``python -m bench``).
"""

from __future__ import annotations

from bench.probes.common import bench_cluster, parse_args, print_walls, workload_at

MULTIPLES = (0.5, 1.0, 2.0)


def main(argv: list[str] | None = None) -> int:
    import ray

    from daftscale.cluster import from_ray_nodes
    from daftscale.pipeline import probe
    from daftscale.plan import plan as make_plan
    from daftscale.profile import profile_dataframe
    from daftscale.run import run
    from daftscale.tune import candidate_grid
    from daftscale.tune_search import candidate_plan, max_batch_size

    args = parse_args(__doc__, "python -m bench.probes.neighbours", argv, default_scale=1.0, workloads="W1,W2")
    with bench_cluster(args.out) as bench:
        for name in args.workloads:
            workload, pipe, udf_profile = workload_at(bench, name, args.scale)
            kwargs = bench.planner_kwargs(workload, udf_profile)
            data = profile_dataframe(probe(pipe).scaling_input)
            cluster = from_ray_nodes(ray.nodes())
            formula = make_plan(data, cluster, **kwargs)
            grid = candidate_grid(
                formula.batch_size,
                partitions=formula.partitions if formula.strategy == "shuffle" else None,
                into_batches=formula.into_batches if formula.strategy != "shuffle" else None,
                rows=data.rows,
                batch_multiples=MULTIPLES,
                task_multiples=MULTIPLES,
                max_batch_size=max_batch_size(formula, data, cluster, kwargs, formula.batch_size * 4),
            )
            plans = {cand.name: candidate_plan(formula, cand, data, cluster, kwargs) for cand in grid}
            print(f"{name}: {workload.rows:,} rows, formula plan {formula.to_code().splitlines()}", flush=True)
            walls: dict[str, list[float]] = {cand: [] for cand in plans}
            for repeat in range(args.repeats):
                for cand, the_plan in plans.items():
                    bench.settle()
                    report = run(pipe, runner="ray", plan=the_plan, progress=False)
                    walls[cand].append(report.wall_s)
                    print(
                        f"[{repeat}] {name} {cand:12s} B={the_plan.batch_size:5d} partitions={the_plan.partitions} "
                        f"into_batches={the_plan.into_batches}: wall {report.wall_s:6.2f} s, rows "
                        f"{report.rows_in}→{report.rows_out}, util {report.actor_utilization:.2f}",
                        flush=True,
                    )
            cells = {
                cand: [str(p.batch_size), str(p.partitions or "-"), str(p.into_batches or "-")]
                for cand, p in plans.items()
            }
            print_walls(
                f"{name} candidate",
                ["B", "partitions", "into_batches"],
                {cand: (cells[cand], walls[cand]) for cand in plans},
                "formula",
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
