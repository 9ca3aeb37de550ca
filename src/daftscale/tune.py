"""Tune: a measured search around the formula plan, on a sample of the data, saved as a plan file.

Owns :func:`tune`, the entry point: it checks the options, looks the cache up, opens a
:class:`daftscale.run.Session` for the trials and writes the winning plan. The parts live in their own
modules and are re-exported here: the candidate grid and the successive-halving schedule (pure,
:mod:`daftscale.tune_grid`), the trials and the search (:mod:`daftscale.tune_search`), the result
(:mod:`daftscale.tune_result`) and the per-input cache (:mod:`daftscale.tune_cache`).

How a search goes (:func:`tune`):

1. probe and profile the pipeline's DataFrame at the scaling step and make the formula plan for the
   cluster at hand (as ``daftscale run`` does); a cached result for the same pipeline source, data
   profile, cluster shape and planner options is returned at once (with ``local_cluster`` it is looked
   up before the cluster starts, profiling in a native-runner subprocess);
2. candidates: the formula's partitions (streaming: ``into_batches`` rows per task) and batch size
   times ``×¼ ×½ ×1 ×2 ×4`` each, deduplicated, batch sizes above what an actor's memory holds dropped;
3. the formula plan runs first, on the smallest rung's sample; its run report calibrates the simulator
   (:func:`daftscale.simulate.costs_from_report`), which then predicts every candidate on the full data
   and prunes those it predicts out of memory or much slower than the best (kept at most
   ``max_candidates``);
4. successive halving: all survivors run on a small sample, the faster half on a sample ``eta`` times
   bigger, and so on up to the whole ``sample`` fraction; the formula plan runs in every rung as the
   baseline, and a candidate must beat it by ``MIN_IMPROVEMENT`` on the last rung, and again in an
   earlier rung or when both are run once more, to win (smaller gains, or one run's, are within
   run-to-run noise). "Faster" is
   the wall time each trial predicts for the full data (:func:`extrapolated_wall_s`: the sample's wall
   time plus the rows it did not run, at its actors' steady rate), not the sample's rows/s: a sample
   run is mostly the query's fixed start (seconds on a small cluster), which would hide the differences
   in the UDF stage that the candidates are about, and would penalise a big batch's tail, which weighs
   less on the full data;
5. measured costs: when the formula plan was made without a UDF profile (the pipeline declared a batch
   size, or none), the first rung's runs have called the UDF at several batch sizes; the per-call and
   per-row costs fitted over all those calls give the planner the profile it lacked, and the plan it then
   makes joins the search as the candidate ``measured costs`` (run on the first rung's sample as soon
   as two batch sizes have run there, then halved like the rest). This is how a search finds a batch
   size outside the grid's two octaves; ``measured_costs=False`` leaves it out;
6. the winner is the full-data plan with the winning numbers; its steps say it was tuned, from what,
   and by how much it beat the formula plan on the sample.

Sampling: a trial runs the pipeline on a :class:`SampledPlan`, whose handle's ``apply(df)`` first takes
``df.limit(n)`` of the DataFrame reaching the scaling step, then applies the candidate's scaling step. ``limit`` (not
``sample``) because it gives exactly ``n`` rows, so every candidate of a rung sees the same rows,
rows in == rows out is checked exactly, and reading stops early; the price is that the sample is the
head of the data, so sorted data gives a biased sample. Partitions are scaled with the sample
(``sample_partitions``) so each partition holds as many rows as in the full run.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from daftscale.config import DEFAULT_STALL_TIMEOUT_S, require_positive_number
from daftscale.console import ProgressLines, stderr_console
from daftscale.errors import ConfigError
from daftscale.pipeline import Pipeline, load_pipeline, probe
from daftscale.plan_handle import SampledPlan
from daftscale.report import atomic_write
from daftscale.tune_cache import cache_dir, cache_key, cached_before_start, read_cache, search_settings
from daftscale.tune_grid import (
    DEFAULT_ETA,
    DEFAULT_MULTIPLES,
    Candidate,
    Rung,
    candidate_grid,
    extrapolated_wall_s,
    halving_schedule,
    parse_multiples,
    sample_partitions,
)
from daftscale.tune_result import MIN_IMPROVEMENT, TUNE_FORMAT_VERSION, Trial, TuneResult
from daftscale.tune_search import CONFIRMATION_RUNS, PRUNE_SLOWER_THAN, Search
from daftscale.watchdog import bounded_prep, resolve_stall_timeout

if TYPE_CHECKING:
    from daftscale.run import Session  # run imports calibrate, which imports this module

# Share of the data the last rung runs on: large enough for steady state, small enough to be quick.
DEFAULT_SAMPLE = 0.1

# Wall-clock budget for the whole search; past it no new trial starts and the best so far wins.
DEFAULT_BUDGET_S = 300.0

# Most candidates measured in the first rung (ranked by the simulator's prediction): each real trial
# costs an actor-pool start-up, so the grid's 25 would take minutes even on small samples.
DEFAULT_MAX_CANDIDATES = 8


def check_out(out: str | None, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a directory, exists without ``overwrite``, or has no parent directory."""
    if out is None:
        return
    if os.path.isdir(out):
        raise ConfigError(f"--out {out} is a directory: pass a file path such as {os.path.join(out, 'plan.json')}")
    if os.path.exists(out) and not overwrite:
        raise ConfigError(f"--out {out} already exists: pass --overwrite, or choose another file")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise ConfigError(f"--out {out}: directory {parent} does not exist; create it first")


def tune(
    pipeline_or_path: Pipeline | str | os.PathLike[str],
    *,
    runner: str = "native",
    ray_address: str | None = None,
    local_cluster: str | tuple[int, int] | None = None,
    sample: float = DEFAULT_SAMPLE,
    budget_s: float = DEFAULT_BUDGET_S,
    out: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    progress: bool = True,
    console: Any = None,
    batch_multiples: Sequence[float] = DEFAULT_MULTIPLES,
    partition_multiples: Sequence[float] = DEFAULT_MULTIPLES,
    eta: int = DEFAULT_ETA,
    max_candidates: int = DEFAULT_MAX_CANDIDATES,
    measured_costs: bool = True,
    stall_timeout: float | int | str | None = None,
    **planner_kwargs: Any,
) -> TuneResult:
    """Search partitions × batch size around the formula plan on a sample; return (and save) the best plan.

    Usable in-process on a running Ray cluster (``runner="ray"`` joins it and leaves it running), on
    Daft's native runner, or on a local cluster started for the search (``local_cluster="2x2"``).

    Args:
        pipeline_or_path: a :class:`~daftscale.pipeline.Pipeline` or the path of a pipeline file.
        runner, ray_address, local_cluster: where trials run, as for :func:`daftscale.run.run`.
        sample: fraction of the rows at the scaling step the last rung runs on (0 < sample ≤ 1).
        budget_s: wall-clock budget; a trial starts only if it, and the two runs that confirm a win, fit
            in it; when one does not, the search stops and the best measured so far wins if it is confirmed.
        out: write the winning plan there (atomically); an existing file needs ``overwrite``.
        cache_dir: where results are cached (default ``$DAFTSCALE_CACHE_DIR/tune`` or
            ``~/.cache/daftscale/tune``); ``use_cache=False`` searches again (and refreshes the entry).
        progress: one line per trial on stderr (``console`` to redirect it).
        batch_multiples, partition_multiples: the grid around the formula's batch size and partitions
            (``into_batches`` for streaming plans).
        eta: successive halving keeps 1/eta per rung; max_candidates: most candidates measured.
        measured_costs: add the formula plan made with the UDF costs fitted from the first rung's runs
            (only when the planner had no UDF profile).
        stall_timeout: the watchdog's floor in seconds for the trials and the profile before them, as
            for :func:`daftscale.run.run` (default 60; 0 turns it off).
        **planner_kwargs: options for :func:`daftscale.plan.plan`, over the pipeline's own.
    """
    from daftscale.run import resolve_runner

    started = time.monotonic()
    runner = resolve_runner(runner, ray_address, local_cluster)
    if not (isinstance(sample, (int, float)) and 0 < sample <= 1):
        raise ConfigError(f"--sample must be a fraction above 0 and at most 1, got {sample!r}: e.g. 0.1")
    budget_s = require_positive_number(budget_s, "budget")
    stall_floor_s = resolve_stall_timeout(stall_timeout)
    if int(max_candidates) < 1:
        raise ConfigError(f"max_candidates must be 1 or more, got {max_candidates}")
    out_path = os.fspath(out) if out is not None else None
    check_out(out_path, overwrite)
    from daftscale.run import loads_after_start

    # A plain script on Ray loads once Ray is up (loads_after_start): its cache is looked up with the search.
    deferred = loads_after_start(pipeline_or_path, runner)
    pipe = None if deferred else load_pipeline(pipeline_or_path)
    kwargs = pipe.planner_options(planner_kwargs) if pipe is not None else {}
    say = ProgressLines(progress, console)

    batch_multiples = tuple(float(m) for m in batch_multiples)  # floats: 1 and 1.0 give one cache key
    partition_multiples = tuple(float(m) for m in partition_multiples)
    hit = None
    if pipe is not None and use_cache and local_cluster is not None and os.path.isfile(str(pipeline_or_path)):
        settings = search_settings(
            kwargs,
            runner,
            float(sample),
            batch_multiples,
            partition_multiples,
            int(eta),
            int(max_candidates),
            bool(measured_costs),
        )
        hit = cached_before_start(os.fspath(pipeline_or_path), pipe, local_cluster, settings, cache_dir, budget_s)
        if hit is not None:
            say.say(f"[bold]cached[/bold]: tune result for these inputs from {hit.cache_path} (no cluster started)")
    if hit is not None:
        result = hit
    else:
        from daftscale.run import Session

        with Session(runner, ray_address=ray_address, local_cluster=local_cluster) as session:
            if pipe is None:
                pipe = load_pipeline(pipeline_or_path)
                kwargs = pipe.planner_options(planner_kwargs)
            result = _search(
                pipe,
                session,
                kwargs,
                say=say,
                sample=float(sample),
                budget_s=budget_s,
                started=started,
                cache_root=cache_dir,
                use_cache=use_cache,
                batch_multiples=batch_multiples,
                partition_multiples=partition_multiples,
                eta=int(eta),
                max_candidates=int(max_candidates),
                measured_costs=bool(measured_costs),
                stall_timeout=stall_floor_s,
            )
    if out_path is not None:
        check_out(out_path, overwrite)  # again: the file may have appeared while the search ran
        atomic_write(out_path, (result.best.to_json() + "\n").encode())
        result.out = out_path
    result.elapsed_s = time.monotonic() - started
    return result


def _search(
    pipe: Pipeline,
    session: Session,
    kwargs: dict[str, Any],
    *,
    say: ProgressLines,
    sample: float,
    budget_s: float,
    started: float,
    cache_root: str | os.PathLike[str] | None,
    use_cache: bool,
    batch_multiples: tuple[float, ...],
    partition_multiples: tuple[float, ...],
    eta: int,
    max_candidates: int,
    measured_costs: bool = True,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT_S,
) -> TuneResult:
    from daftscale.plan import plan as make_plan
    from daftscale.profile import profile_dataframe

    runner, cluster = session.runner, session.cluster
    probed = probe(pipe)
    # A query with no UDF progress to watch: bounded as the run's profile is, and never silent.
    data = bounded_prep(
        lambda: profile_dataframe(
            probed.scaling_input, parquet_paths=probed.parquet_paths, text_paths=probed.text_read_paths
        ),
        what="profiling the DataFrame at the scaling step (a row count and a sample)",
        floor_s=stall_timeout,
        say=stderr_console().print,
    )
    kwargs = probed.planner_options(kwargs)
    formula = make_plan(data, cluster, **kwargs)
    settings = search_settings(
        kwargs, runner, sample, batch_multiples, partition_multiples, eta, max_candidates, measured_costs
    )
    key = cache_key(pipe, data, cluster, settings)
    path = os.path.join(cache_dir(cache_root), f"{key}.json")
    if use_cache:
        hit = read_cache(path, budget_s)
        if hit is not None:
            say.say(f"[bold]cached[/bold]: tune result for these inputs from {path}")
            return hit

    search = Search(
        pipe,
        session,
        kwargs,
        data,
        formula,
        say,
        budget_s=budget_s,
        started=started,
        fit_costs=measured_costs,
        stall_timeout=stall_timeout,
    )
    result = search.run(sample, batch_multiples, partition_multiples, eta, max_candidates)
    result.cache_path = path
    if search.stopped_by_budget:
        result.budget_cut_s = budget_s
        result.notes.append(f"the {budget_s:g} s budget cut the search short: a rerun with more budget searches again")
    with contextlib.suppress(OSError):  # a cache that cannot be written only costs the next search
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, (json.dumps(result.to_dict(), indent=2) + "\n").encode())
    return result


__all__ = [
    "CONFIRMATION_RUNS",
    "DEFAULT_BUDGET_S",
    "DEFAULT_ETA",
    "DEFAULT_MAX_CANDIDATES",
    "DEFAULT_MULTIPLES",
    "DEFAULT_SAMPLE",
    "MIN_IMPROVEMENT",
    "PRUNE_SLOWER_THAN",
    "TUNE_FORMAT_VERSION",
    "Candidate",
    "Rung",
    "SampledPlan",
    "Trial",
    "TuneResult",
    "cache_dir",
    "cache_key",
    "candidate_grid",
    "extrapolated_wall_s",
    "halving_schedule",
    "parse_multiples",
    "sample_partitions",
    "tune",
]
