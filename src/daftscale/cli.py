"""The ``daftscale`` command: parse options, call the public Python API, render the result.

Every command is a thin layer: the work happens in :mod:`daftscale.profile`, :mod:`daftscale.plan`,
:mod:`daftscale.run` and friends, callable from Python with the same arguments. Any
:class:`~daftscale.errors.DaftscaleError` (and any usage error) becomes one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import click

from daftscale.config import DEFAULT_DEMO_ROWS
from daftscale.errors import DaftscaleError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _echo_error(message: str) -> None:
    click.echo(f"daftscale: error: {' '.join(message.split())}", err=True)


# ---------------------------------------------------------------------------------------------------
# Shared options


def _options(*options: Any) -> Any:
    """One decorator applying several click options, listed in the order --help shows them."""

    def decorate(func: Any) -> Any:
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# --nodes/--cpus-per-node/--gpus-per-node/--memory-per-node/--gpu-memory/--ray.
cluster_options = _options(
    click.option("--nodes", type=int, help="Nodes in the cluster (declared)."),
    click.option("--cpus-per-node", type=float, help="Logical CPUs per node."),
    click.option("--gpus-per-node", type=float, help="GPUs per node."),
    click.option("--memory-per-node", help="Memory per node, e.g. 64GiB."),
    click.option("--gpu-memory", help="Memory per GPU, e.g. 80GiB (bounds GPU UDF batches)."),
    click.option("--ray", "ray_address", metavar="ADDRESS|auto", help="Discover the cluster from Ray."),
)

# The data to plan for, when it is not (only) a Parquet SOURCE: shared by plan and simulate.
data_options = _options(
    click.option("--rows", type=int, help="Total rows R (overrides the profile)."),
    click.option("--bytes-per-row", type=float, help="Average bytes per row (overrides the profile)."),
    click.option("--columns", help="Comma-separated columns the UDF reads (classify only these)."),
)

# The planner's knobs, shared by plan, run, tune and simulate.
plan_options = _options(
    click.option("--concurrency", type=int, help="Total UDF actors C (default: what the cluster fits)."),
    click.option("--batch-size", type=int, help="Rows per UDF call B (default: from UDF profile, else 64)."),
    click.option("--batches-per-task", type=int, default=None, help="K, batches per actor per task (4)."),
    click.option("--udf-gpus", type=float, help="GPUs per UDF actor (fractions allowed)."),
    click.option("--udf-cpus", type=float, help="CPUs per UDF actor (default 1)."),
    click.option("--udf-memory", help="Memory budget per UDF actor, e.g. 8GiB."),
    click.option(
        "--strategy",
        type=click.Choice(["auto", "shuffle", "streaming"]),
        default="auto",
        show_default=True,
        help="Force a strategy instead of choosing from the data.",
    ),
    click.option("--keys", help="Comma-separated join/groupby keys: hash-shuffle on them."),
    click.option("--inflation", type=float, default=None, help="Decoded size over profiled size (3.0)."),
)

# The UDF's cost, for choosing B and predicting the run.
udf_cost_options = _options(
    click.option("--udf-seconds-per-row", type=float, help="UDF seconds per row of a batch (from a profile)."),
    click.option("--udf-seconds-per-batch", type=float, help="UDF fixed seconds per call (from a profile)."),
)


def udf_profile_from_options(seconds_per_row: float | None, seconds_per_batch: float | None) -> Any:
    """A UdfProfile for the planner when both costs are given (one alone cannot choose a batch size)."""
    from daftscale.profile import UdfProfile

    if seconds_per_row is None or seconds_per_batch is None:
        return None
    return UdfProfile(seconds_per_row=seconds_per_row, seconds_per_batch=seconds_per_batch)


def planner_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Map CLI option values onto :func:`daftscale.plan.plan` keyword arguments."""
    from daftscale.config import DEFAULT_BATCHES_PER_TASK, DEFAULT_INFLATION
    from daftscale.plan import UdfResources

    keys = tuple(k.strip() for k in (params.get("keys") or "").split(",") if k.strip())
    return {
        "concurrency": params.get("concurrency"),
        "batch_size": params.get("batch_size"),
        "batches_per_task": DEFAULT_BATCHES_PER_TASK
        if params.get("batches_per_task") is None
        else params["batches_per_task"],
        "udf": UdfResources.of(
            cpus=params.get("udf_cpus"), gpus=params.get("udf_gpus"), memory=params.get("udf_memory")
        ),
        "strategy": params.get("strategy") or "auto",
        "keys": keys,
        "inflation": DEFAULT_INFLATION if params.get("inflation") is None else params["inflation"],
    }


def resolve_cluster(params: dict[str, Any]) -> Any:
    from daftscale import cluster

    return cluster.resolve(
        nodes=params.get("nodes"),
        cpus_per_node=params.get("cpus_per_node"),
        gpus_per_node=params.get("gpus_per_node"),
        memory_per_node=params.get("memory_per_node"),
        gpu_memory_per_gpu=params.get("gpu_memory"),
        ray_address=params.get("ray_address"),
    )


# ---------------------------------------------------------------------------------------------------
# Commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="daftscale")
def cli() -> None:
    """Scale Daft workflows to a Ray cluster with the numbers computed, applied, measured and explained."""


@cli.command("plan")
@click.argument("source", required=False, nargs=-1)
@data_options
@cluster_options
@plan_options
@udf_cost_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def plan_command(
    source: Sequence[str],
    rows: int | None,
    bytes_per_row: float | None,
    columns: str | None,
    fmt: str,
    udf_seconds_per_row: float | None,
    udf_seconds_per_batch: float | None,
    **params: Any,
) -> None:
    """Profile SOURCE (Parquet files, directories or globs) or --rows, and print the scaling plan."""
    from daftscale.plan import plan
    from daftscale.profile import profile

    column_list = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    data = profile(list(source) if source else None, rows=rows, bytes_per_row=bytes_per_row, columns=column_list)
    kwargs = planner_kwargs(params)
    udf_profile = udf_profile_from_options(udf_seconds_per_row, udf_seconds_per_batch)
    result = plan(data, resolve_cluster(params), udf_profile=udf_profile, **kwargs)
    if udf_seconds_per_row is not None or udf_seconds_per_batch is not None:
        # With the UDF's costs known the plan can carry its predicted makespan and utilisation.
        from daftscale.simulate import resolve_costs, simulate

        costs = resolve_costs(result, seconds_per_row=udf_seconds_per_row, seconds_per_batch=udf_seconds_per_batch)
        result = result.with_prediction(simulate(result, costs=costs).prediction())
    if fmt == "json":
        click.echo(result.to_json())
        return
    render_plan(result)
    if result.predicted:
        p = result.predicted
        click.echo("")
        click.echo(
            f"Predicted (daftscale simulate): {p['makespan_s']:,.1f} s, actors {p['utilization']:.0%} busy, "
            f"bottleneck: {p['bottleneck']}"
            + (f"; assumed {', '.join(a.split(' (')[0] for a in p['assumptions'])}" if p["assumptions"] else "")
        )


def render_plan(result: Any) -> None:
    """The plan as in Daft's scaling guide's worked example: headline numbers, the steps, the levers, the warnings."""
    from daftscale.config import format_bytes

    head = [
        f"strategy: {result.strategy}",
        f"partitions: {result.partitions if result.partitions is not None else 'as scanned'}"
        + (f" ({result.partition_op})" if result.partition_op else ""),
        f"batch_size: {result.batch_size}",
        f"concurrency: {result.concurrency} ({result.actors_per_node} per node)",
    ]
    if result.into_batches is not None:
        head.append(f"into_batches: {result.into_batches}")
    if result.partition_bytes_target is not None:
        head.append(f"partition target: {format_bytes(result.partition_bytes_target)}")
    click.echo("daftscale plan — " + ", ".join(head))
    click.echo("")
    click.echo(result.explain())
    click.echo("")
    click.echo("Paste into your pipeline:")
    click.echo("")
    click.echo("\n".join("    " + line if line else "" for line in result.to_code().splitlines()))


def runtime_options(*, verb: str, span: str) -> Callable[[Any], Any]:
    """The runner options of ``run`` and ``tune``: --runner, --ray-address and --local-cluster."""

    def decorate(fn: Any) -> Any:
        fn = click.option(
            "--local-cluster", metavar="NxC", help=f"Start N local Ray nodes of C CPUs for {span}, e.g. 2x2."
        )(fn)
        fn = click.option("--ray-address", metavar="ADDRESS|auto", help=f"{verb} on this running Ray cluster.")(fn)
        return click.option(
            "--runner",
            type=click.Choice(["native", "ray"]),
            default=None,
            help="Daft's native runner (default) or Ray (implied by --ray-address/--local-cluster).",
        )(fn)

    return decorate


@cli.command("run")
@click.argument("pipeline_path", metavar="PIPELINE")
# A plain script's own arguments (its sys.argv[1:]) follow it, options among them after `--`
# (`daftscale run job.py --local-cluster 2x2 -- --limit 100`), so daftscale's own options may still follow PIPELINE.
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- SCRIPT_ARGS...]")
@runtime_options(verb="Run", span="this run")
@click.option("--plan", "plan_source", default="auto", show_default=True, metavar="auto|PLAN.json")
@click.option("--report", "report_dir", metavar="DIR", help="Write report.json, report.html and plots to DIR.")
@click.option("--overwrite", is_flag=True, help="Replace an existing report in DIR and an existing output.")
@click.option("--no-progress", is_flag=True, help="No progress line.")
@click.option(
    "--on-error",
    type=click.Choice(["raise", "log", "ignore"]),
    default=None,
    help="When a UDF call raises: fail the run (raise, Daft's default), or null its batch's rows and count them.",
)
@click.option(
    "--check-rows/--no-check-rows",
    default=None,
    help="Fail unless rows out = rows in (default: checked when nothing after the scaling step filters).",
)
@click.option("--force-plan", is_flag=True, help="Run a --plan file made for another cluster shape anyway.")
@click.option("--max-memory", metavar="SIZE", help="Stop the run if any node's resident memory passes SIZE, e.g. 8GiB.")
@click.option(
    "--stall-timeout",
    metavar="SECONDS",
    help="Stop the run when no UDF call starts or finishes for max(SECONDS, 5 x the longest call) "
    "(default 60; 0 turns the watchdog off).",
)
@click.option("--output", metavar="DIR", help="Write the rows to DIR, whole or not at all (instead of a script's own).")
@click.option(
    "--output-format",
    type=click.Choice(["parquet", "csv", "json"]),
    default=None,
    help="Format of --output (default parquet, or the script's own).",
)
@click.option("--append", is_flag=True, help="Add this run's files to an existing output directory.")
@click.option(
    "--keep-udf-settings",
    is_flag=True,
    help="Plain scripts: keep the @daft.cls concurrency and batch size the script gives (plan around them).",
)
@click.option(
    "--calibrate",
    default="auto",
    show_default=True,
    metavar="auto|off|SECONDS",
    help="Before planning, measure the pipeline on a sample on this runner: "
    "auto (unless the job is too small to sample), off, or a budget in seconds.",
)
@plan_options
def run_command(
    pipeline_path: str,
    script_args: tuple[str, ...],
    runner: str | None,
    ray_address: str | None,
    local_cluster: str | None,
    plan_source: str,
    report_dir: str | None,
    overwrite: bool,
    no_progress: bool,
    on_error: str | None,
    check_rows: bool | None,
    force_plan: bool,
    max_memory: str | None,
    stall_timeout: str | None,
    output: str | None,
    output_format: str | None,
    append: bool,
    keep_udf_settings: bool,
    calibrate: str,
    **params: Any,
) -> None:
    """Plan and run PIPELINE, measure it, and print the summary.

    PIPELINE is a pipeline file (a build(plan) function) or a plain Daft script, run as it is: daftscale
    puts the scaling step after its read, sizes its @daft.cls UDFs and writes its output whole or not at all.
    A script's own arguments follow it, after `--` (its sys.argv[1:]: `daftscale run job.py -- --limit 100`).

    With --plan auto the plan is calibrated first: the pipeline runs on a small sample with no scaling
    step and with the formula plan made from what that measured, and the faster is kept (see the
    report's "decision" and "calibration" rows).
    """
    from daftscale.run import run

    # build.main() hands the CLI its Pipeline object (main(pipeline=...)); else PIPELINE is a path to load.
    handed = click.get_current_context().find_root().obj
    kwargs = _explicit_planner_kwargs(params)
    if plan_source != "auto" and kwargs:
        from daftscale.errors import ConfigError

        # A plan file fixes every number; silently ignoring --batch-size etc. would run something else.
        context = click.get_current_context()
        given = ", ".join(
            "--" + name.replace("_", "-") for k in kwargs for name in _PLANNER_OPTIONS[k] if _given(context, name)
        )
        raise ConfigError(
            f"--plan {plan_source} cannot be combined with planner options ({given}): "
            "drop them, or use --plan auto to plan with them"
        )
    with _gpu_request_worded(pipeline_path, handed):
        report = run(
            handed if handed is not None else pipeline_path,
            runner=runner or "native",  # run()/tune() switch to Ray for an address or local cluster
            ray_address=ray_address,
            local_cluster=local_cluster,
            plan=plan_source,
            report_dir=report_dir,
            overwrite=overwrite,
            progress=not no_progress,
            on_error=on_error,
            check_rows=check_rows,
            force_plan=force_plan,
            max_memory=max_memory,
            stall_timeout=stall_timeout,
            output=output,
            output_format=output_format,
            append=append,
            keep_udf_settings=keep_udf_settings,
            calibrate=calibrate,
            script_args=script_args,
            **kwargs,
        )
    render_run(report, report_dir)


# The CLI options behind each planner keyword argument.
_PLANNER_OPTIONS = {
    "concurrency": ("concurrency",),
    "batch_size": ("batch_size",),
    "batches_per_task": ("batches_per_task",),
    "udf": ("udf_cpus", "udf_gpus", "udf_memory"),
    "strategy": ("strategy",),
    "keys": ("keys",),
    "inflation": ("inflation",),
}


def _explicit_planner_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Planner options the user actually gave, so the pipeline's own @pipeline(...) options stay in force.

    An option given with its default value counts as given: ``--udf-gpus 0`` must override a script's
    ``@daft.cls(gpus=1)``, so what the command line said is asked of click, not guessed from the values.
    """
    given = planner_kwargs(params)
    context = click.get_current_context(silent=True)
    if context is None:  # called outside a command: only values other than the defaults can tell
        defaults = planner_kwargs({})
        return {k: v for k, v in given.items() if v != defaults[k]}
    return {k: v for k, v in given.items() if any(_given(context, name) for name in _PLANNER_OPTIONS[k])}


def _given(context: click.Context, name: str) -> bool:
    """Whether option ``name`` came from the command line (or the environment), not its default."""
    source = context.get_parameter_source(name)
    return source is not None and source not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )


def _gpu_request_error(exc: Any, pipeline_path: str, script: bool) -> Any:
    """``exc`` (the plan's GPU refusal, worded for ``daftscale plan``) worded for ``run``/``tune``: the
    request's real source (``--udf-gpus``, the script's ``@daft.cls(gpus=...)``, the pipeline's options)
    and fixes these commands have (they discover the cluster, so there is no --gpus-per-node to pass)."""
    from daftscale.errors import GpuRequestError

    gpus, have = f"{exc.gpus:g}", f"{exc.gpus_per_node:g}"
    if _given(click.get_current_context(), "udf_gpus"):
        source = f"--udf-gpus {gpus}"
    elif script:
        source = f"the script's @daft.cls(gpus={gpus}) in {os.path.basename(pipeline_path)}"
    else:
        source = f"the pipeline's @daftscale.pipeline(udf=UdfResources(gpus={gpus}))"
    return GpuRequestError(
        f"{source} asks for {gpus} GPU per actor but the cluster has {have} GPUs per node: run on a cluster "
        "with GPUs (--ray-address ADDRESS), or pass --udf-gpus 0 to run the model on CPU",
        gpus=exc.gpus,
        gpus_per_node=exc.gpus_per_node,
    )


@contextlib.contextmanager
def _gpu_request_worded(pipeline_path: str, handed: Any) -> Iterator[None]:
    """Reword the plan's GPU refusal for the ``run``/``tune`` command running ``pipeline_path``."""
    from daftscale.errors import GpuRequestError

    try:
        yield
    except GpuRequestError as exc:
        from daftscale.script import is_plain_script

        script = handed is None and is_plain_script(pipeline_path)
        raise _gpu_request_error(exc, pipeline_path, script) from exc


def render_run(report: Any, report_dir: str | None) -> None:
    from rich.console import Console

    console = Console()
    console.print(report.summary_table())
    if report_dir:
        console.print(f"report: {os.path.join(report_dir, 'report.html')} (and report.json)")


@cli.command("demo")
@click.option("--local-cluster", metavar="NxC", help="Run on N local Ray nodes of C CPUs, e.g. 2x2 (default: native).")
@click.option("--report", "report_dir", default="daftscale-report", show_default=True, metavar="DIR")
@click.option("--rows", type=int, default=DEFAULT_DEMO_ROWS, show_default=True, help="Rows in the demo dataset.")
@click.option("--data-dir", metavar="DIR", help="Where to write the demo data (default: a temporary directory).")
@click.option("--overwrite", is_flag=True, help="Replace a report in DIR that an earlier demo did not write.")
def demo_command(local_cluster: str | None, report_dir: str, rows: int, data_dir: str | None, overwrite: bool) -> None:
    """Make a small dataset, plan it, run it, and report: daftscale end to end in a minute.

    The model is a synthetic stand-in for a GPU model call: each batch sleeps a fixed 20 ms plus
    0.5 ms per row, and the per-row "heavy read" sleeps 0.5 ms. Nothing is downloaded.
    """
    from daftscale.config import require_positive_int
    from daftscale.demo import demo

    require_positive_int(rows, "rows")
    where = f"a local Ray cluster of {local_cluster}" if local_cluster else "Daft's native runner"
    click.echo(
        f"daftscale demo: {rows:,} image paths → per-row read → model actor UDF on {where}. "
        "The model is a synthetic stand-in for a GPU model call (sleeps 20 ms + 0.5 ms per row per batch)."
    )
    report = demo(local_cluster=local_cluster, report_dir=report_dir, rows=rows, data_dir=data_dir, overwrite=overwrite)
    render_run(report, report_dir)


@cli.command("simulate")
@click.argument("source", required=False, nargs=-1)
@click.option("--plan", "plan_file", metavar="PLAN.json", help="Simulate this plan file (instead of planning).")
@data_options
@cluster_options
@plan_options
@udf_cost_options
@click.option("--calibration", metavar="REPORT.json", help="Fit the costs from a run report (daftscale run --report).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--plot", metavar="FILE.png", help="Also write actor utilisation over time as a PNG.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --plot file.")
def simulate_command(
    source: Sequence[str],
    plan_file: str | None,
    rows: int | None,
    bytes_per_row: float | None,
    columns: str | None,
    udf_seconds_per_row: float | None,
    udf_seconds_per_batch: float | None,
    calibration: str | None,
    fmt: str,
    plot: str | None,
    overwrite: bool,
    **params: Any,
) -> None:
    """Predict makespan, utilisation and peak memory of a plan on any cluster, without running it.

    Give --plan PLAN.json (with --nodes etc. to ask "this plan on that cluster"), or what 'daftscale
    plan' takes (SOURCE or --rows, cluster and plan options) to plan and simulate in one go.
    """
    from daftscale.errors import ConfigError
    from daftscale.run import read_plan_file
    from daftscale.simulate import plot_utilization, resolve_costs, simulate

    if plot and os.path.exists(plot) and not overwrite:
        raise ConfigError(f"{plot} already exists: pass --overwrite to replace it, or choose another --plot file")
    cluster_keys = ("nodes", "cpus_per_node", "gpus_per_node", "memory_per_node", "gpu_memory", "ray_address")
    if plan_file is not None:
        planning = [k for k, v in _explicit_planner_kwargs(params).items() if v]
        if source or rows is not None or bytes_per_row is not None or columns or planning:
            raise ConfigError(
                "--plan cannot be combined with SOURCE, --rows, --bytes-per-row or plan options: "
                "simulate the plan file as it is (cluster options allowed), or drop --plan to plan afresh"
            )
        the_plan = read_plan_file(plan_file)
        cluster = resolve_cluster(params) if any(params.get(k) is not None for k in cluster_keys) else None
    else:
        from daftscale.plan import plan
        from daftscale.profile import profile

        column_list = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
        data = profile(list(source) if source else None, rows=rows, bytes_per_row=bytes_per_row, columns=column_list)
        cluster = resolve_cluster(params)
        udf_profile = udf_profile_from_options(udf_seconds_per_row, udf_seconds_per_batch)
        the_plan = plan(data, cluster, udf_profile=udf_profile, **planner_kwargs(params))
    costs = resolve_costs(
        the_plan,
        calibration=calibration,
        seconds_per_row=udf_seconds_per_row,
        seconds_per_batch=udf_seconds_per_batch,
    )
    result = simulate(the_plan, cluster, costs=costs)
    if plot:
        plot_utilization(result, plot)
    if fmt == "json":
        click.echo(result.to_json())
        return
    shown = result.plan
    partitions = shown["partitions"] if shown["partitions"] is not None else "as scanned"
    click.echo(
        f"daftscale simulate — {shown['strategy']} plan, partitions {partitions}, batch_size {shown['batch_size']}"
        + (f", into_batches {shown['into_batches']}" if shown["into_batches"] else "")
        + f", {result.actors} actors on {shown['nodes']} nodes; costs from {result.costs['source']}"
    )
    click.echo("")
    click.echo(result.describe())
    if plot:
        click.echo(f"plot: {plot}")


@cli.command("tune")
@click.argument("pipeline_path", metavar="PIPELINE")
@click.option("--sample", type=float, default=0.1, show_default=True, help="Fraction of the rows to tune on.")
@click.option("--budget", type=float, default=300.0, show_default=True, metavar="SECONDS", help="Search time limit.")
@click.option("--out", metavar="PLAN.json", help="Save the winning plan there (for 'daftscale run --plan').")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@runtime_options(verb="Tune", span="the search")
@click.option("--batch-multiples", metavar="M,M,...", help="Multiples of the formula's batch size (0.25,0.5,1,2,4).")
@click.option("--partition-multiples", metavar="M,M,...", help="Multiples of its partitions (0.25,0.5,1,2,4).")
@click.option("--cache-dir", metavar="DIR", help="Result cache (default $DAFTSCALE_CACHE_DIR or ~/.cache/daftscale).")
@click.option("--no-cache", is_flag=True, help="Search again even if a cached result exists.")
@click.option(
    "--no-measured-costs",
    is_flag=True,
    help="Leave out the candidate planned from the UDF costs the first trials measured.",
)
@click.option(
    "--stall-timeout",
    metavar="SECONDS",
    help="Stop a trial (or the profile before the trials) that makes no progress, as 'daftscale run' does "
    "(default 60; 0 turns the watchdog off).",
)
@click.option("--no-progress", is_flag=True, help="No per-trial lines.")
@plan_options
def tune_command(
    pipeline_path: str,
    sample: float,
    budget: float,
    out: str | None,
    overwrite: bool,
    runner: str | None,
    ray_address: str | None,
    local_cluster: str | None,
    batch_multiples: str | None,
    partition_multiples: str | None,
    cache_dir: str | None,
    no_cache: bool,
    no_measured_costs: bool,
    stall_timeout: str | None,
    no_progress: bool,
    **params: Any,
) -> None:
    """Search partitions × batch size around the formula plan on a sample of PIPELINE's data; save the best."""
    from rich.console import Console

    from daftscale.tune import DEFAULT_MULTIPLES, parse_multiples, tune

    with _gpu_request_worded(pipeline_path, None):
        result = tune(
            pipeline_path,
            runner=runner or "native",  # run()/tune() switch to Ray for an address or local cluster
            ray_address=ray_address,
            local_cluster=local_cluster,
            sample=sample,
            budget_s=budget,
            out=out,
            overwrite=overwrite,
            cache_dir=cache_dir,
            use_cache=not no_cache,
            progress=not no_progress,
            batch_multiples=parse_multiples(batch_multiples, "--batch-multiples") or DEFAULT_MULTIPLES,
            partition_multiples=parse_multiples(partition_multiples, "--partition-multiples") or DEFAULT_MULTIPLES,
            measured_costs=not no_measured_costs,
            stall_timeout=stall_timeout,
            **_explicit_planner_kwargs(params),
        )
    console = Console(width=max(Console().width, 120))
    console.print(result.table())
    console.print(result.summary(), highlight=False)
    for step in result.best.steps[-2:]:
        console.print(f"  {step}", highlight=False)
    if result.out:
        console.print(f"plan: {result.out} (use: daftscale run {pipeline_path} --plan {result.out})", highlight=False)
    console.print(
        f"{'cached, ' if result.cached else ''}{result.elapsed_s:.1f} s; cache: {result.cache_path}", highlight=False
    )


# ---------------------------------------------------------------------------------------------------
# Entry point


def main(argv: Sequence[str] | None = None, *, pipeline: Any = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 130 interrupted).

    ``pipeline``: the :class:`~daftscale.pipeline.Pipeline` object ``run`` runs in place of loading its
    PIPELINE path (what ``build.main()`` passes: the file is already imported, as ``__main__``).
    """
    try:
        cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="daftscale",
            standalone_mode=False,
            obj=pipeline,
        )
    except click.exceptions.NoArgsIsHelpError as exc:  # pragma: no cover - depends on click version
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return EXIT_BAD_INPUT
    except click.UsageError as exc:
        hint = f" (see 'daftscale {exc.ctx.info_name} --help')" if exc.ctx and exc.ctx.parent else " (see --help)"
        _echo_error(f"{exc.format_message()}{hint}")
        return EXIT_BAD_INPUT
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.Abort:
        _echo_error("interrupted")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _echo_error("interrupted")
        return EXIT_INTERRUPTED
    except DaftscaleError as exc:
        _echo_error(str(exc))
        return EXIT_BAD_INPUT
    except click.ClickException as exc:
        _echo_error(exc.format_message())
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
