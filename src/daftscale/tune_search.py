"""A tune search's trials: the candidates' full-data plans, run on samples, and the search itself.

Owns the plan each candidate stands for (run on a :class:`~daftscale.plan_handle.SampledPlan`), and
:class:`Search`, one search's state in stages: the grid (:meth:`Search.make_grid`), the calibrating first
run and the simulator's pruning (:meth:`Search.calibrate`), successive halving (:meth:`Search.halve`), the
measured-costs candidate, and the verdict with its confirmation runs (:meth:`Search.finish`). Trials run on
an open :class:`daftscale.run.Session`; :func:`daftscale.tune.tune` drives it.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from daftscale.cluster import ClusterSpec
from daftscale.config import DEFAULT_STALL_TIMEOUT_S
from daftscale.console import ProgressLines
from daftscale.errors import DaftscaleError, RunError
from daftscale.pipeline import Pipeline
from daftscale.plan import ScalingPlan, describe_step
from daftscale.plan_handle import SampledPlan
from daftscale.profile import DataProfile
from daftscale.report import RunReport
from daftscale.simulate import costs_from_report, simulate
from daftscale.tune_grid import (
    Candidate,
    Rung,
    candidate_grid,
    extrapolated_wall_s,
    fraction_label,
    halving_schedule,
)
from daftscale.tune_result import MIN_IMPROVEMENT, Trial, TuneResult, trial_speed

if TYPE_CHECKING:
    from daftscale.run import Session  # run imports calibrate, which imports this module

# The simulator prunes a candidate predicted this much slower than the best prediction: a margin wide
# enough for the model's error (it calibrates from one run) to keep the close calls for measurement.
PRUNE_SLOWER_THAN = 1.5

# Runs a win needs before it is trusted: the winner and the formula plan once more each (see Search.confirm).
CONFIRMATION_RUNS = 2

# Fewest rows a trial runs on, per actor and batch, so the biggest batch still reaches every actor.
MIN_BATCHES_PER_ACTOR = 1


# ---------------------------------------------------------------------------------------------------
# The candidates' plans


def candidate_plan(
    formula: ScalingPlan, cand: Candidate, data: DataProfile, cluster: ClusterSpec, kwargs: dict[str, Any]
) -> ScalingPlan:
    """The full-data plan for a candidate: the planner's own plan at its batch size, with its task lever."""
    from daftscale.plan import plan as make_plan

    if cand.is_formula:
        return formula
    base = make_plan(data, cluster, **{**kwargs, "batch_size": cand.batch_size})
    levers = dict(base.levers)
    steps = list(base.steps)
    if base.strategy == "shuffle":
        assert cand.partitions is not None
        levers["partitions"] = f"df.{base.partition_op}({cand.partitions}) sets the tasks before the UDF"
        steps.append(
            f"Partitions set to {cand.partitions:,} (tuner candidate: ×{fraction_label(cand.task_multiple)} the "
            f"formula plan's {formula.partitions:,}); apply df.{base.partition_op}({cand.partitions})."
        )
        return replace(base, partitions=cand.partitions, levers=levers, steps=tuple(steps))
    levers["into_batches"] = f"df.into_batches({cand.into_batches}) sets rows per task reaching the UDF"
    steps.append(
        f"into_batches set to {cand.into_batches:,} rows per task "
        f"(tuner candidate: ×{fraction_label(cand.task_multiple)} the formula plan's {formula.into_batches:,})."
    )
    return replace(base, into_batches=cand.into_batches, levers=levers, steps=tuple(steps))


def max_batch_size(
    formula: ScalingPlan, data: DataProfile, cluster: ClusterSpec, kwargs: dict[str, Any], biggest: int
) -> int | None:
    """The batch size an actor's memory bounds B to (the planner lowers a bigger one), or None if unbounded."""
    from daftscale.plan import plan as make_plan

    probe_plan = make_plan(data, cluster, **{**kwargs, "batch_size": biggest})
    return probe_plan.batch_size if probe_plan.batch_size < biggest else None


def _with_batch(plan: ScalingPlan) -> str:
    """The plan's scaling step and batch size, for the search's lines and steps."""
    return f"{describe_step(plan)}, batch size {plan.batch_size}"


# ---------------------------------------------------------------------------------------------------
# The search


class Search:
    """One search's state: candidates, their full-data plans, the trials run so far, the clock."""

    def __init__(
        self,
        pipe: Pipeline,
        session: Session,
        kwargs: dict[str, Any],
        data: DataProfile,
        formula: ScalingPlan,
        say: ProgressLines,
        *,
        budget_s: float,
        started: float,
        fit_costs: bool = True,
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        # Trials run on the tuner's open session (its runtime, its measurement): Session.execute.
        self.pipe, self.session, self.kwargs = pipe, session, kwargs
        self.stall_timeout = stall_timeout
        self.runner, self.cluster = session.runner, session.cluster
        # True until the search's one cost fit is made. Only where the planner had no costs: with a UDF profile
        # the formula already used them.
        self.fit_pending = fit_costs and kwargs.get("udf_profile") is None
        self.calls: list[dict[str, Any]] = []  # every measured trial's UDF calls, for that fit
        self.data, self.formula, self.say = data, formula, say
        self.budget_s, self.started = budget_s, started
        self.trials: list[Trial] = []
        self.notes: list[str] = []
        self.plans: dict[str, ScalingPlan] = {}
        self.predicted: dict[str, tuple[float, bool]] = {}
        self.last_trial_s: tuple[int, float] | None = None
        self.last_report: RunReport | None = None
        self.stopped_by_budget = False
        self._keeps_rows: bool | None = None

    def keeps_rows(self) -> bool:
        """Whether the pipeline's output is row-for-row with its scaling step (a groupby after the UDF is not)."""
        if self._keeps_rows is None:
            from daftscale.run import output_keeps_rows

            self._keeps_rows = output_keeps_rows(self.pipe)
        return self._keeps_rows

    # -- helpers -----------------------------------------------------------------------------------

    def out_of_time(self, rows: int, then: int = 0) -> bool:
        """Would a trial on ``rows`` rows, and ``then`` more of the same size, end past the budget?

        Estimated from the last trial. The search's trials pass ``then=CONFIRMATION_RUNS`` so that the
        repeat a win needs still fits: a search that spends the whole budget exploring ends with one-run
        wins it cannot trust (:meth:`confirm`), so it might as well not have explored.
        """
        elapsed = time.monotonic() - self.started
        if self.last_trial_s is None:
            return elapsed >= self.budget_s
        last_rows, last_s = self.last_trial_s
        return elapsed + (1 + then) * last_s * max(1.0, rows / max(last_rows, 1)) > self.budget_s

    def measure(self, cand: Candidate, rung: int, rows: int) -> Trial:
        full = self.plans[cand.name]
        sampled = SampledPlan.of(full, rows)
        predicted = self.predicted.get(cand.name)
        trial = Trial(
            cand.name,
            cand.batch_size,
            cand.partitions,
            cand.into_batches,
            rung=rung,
            sample_rows=sampled.sample_rows,
            sample_partitions=sampled.plan.partitions,
            predicted_s=predicted[0] if predicted else None,
            predicted_oom=predicted[1] if predicted else False,
        )
        t0 = time.monotonic()
        try:
            # run's own check compares with the full input's rows; the exact check on the sample is below.
            report = self.session.execute(
                self.pipe, plan=sampled, planner_kwargs=self.kwargs, check_rows=False, stall_timeout=self.stall_timeout
            )
        except DaftscaleError as exc:
            trial.error = str(exc)
            self.trials.append(trial)
            self.say.say(f"  rung {rung} · {cand.name}: failed: {exc}")
            if cand.is_formula:
                raise
            return trial
        self.last_trial_s = (sampled.sample_rows, time.monotonic() - t0)
        if report.rows_out != sampled.sample_rows and self.keeps_rows():
            # Never a silent short output: a trial that lost or duplicated rows stops the search.
            raise RunError(
                f"trial {cand.name} returned {report.rows_out:,} rows for a {sampled.sample_rows:,}-row sample: "
                "rows were lost or duplicated in a pipeline that keeps every row after plan.apply; re-run it "
                "(check the Ray logs for dead workers)"
            )
        self.calls.extend(report.udf_calls)
        trial.wall_s = report.wall_s
        trial.rows_per_s = report.rows_out / report.wall_s if report.wall_s > 0 else None
        # In rows at the UDF, which the calls' rates count (an explode or filter after plan.apply changes them).
        udf_rows = sum(int(c.get("rows") or 0) for c in report.udf_calls) or sampled.sample_rows
        growth = udf_rows / max(sampled.sample_rows, 1)
        trial.full_s = extrapolated_wall_s(
            report.udf_calls, report.wall_s, udf_rows, round(self.data.rows * growth), full.concurrency
        )
        trial.utilization = report.actor_utilization
        self.trials.append(trial)
        self.say.say(
            f"  rung {rung} · {cand.name:<12} partitions {sampled.plan.partitions or '-'!s:>5} "
            f"batch {cand.batch_size:>5} "
            f"on {sampled.sample_rows:,} rows: {report.wall_s:.2f} s ({trial.full_s or 0:.1f} s on all rows), "
            f"utilisation {'unknown' if report.actor_utilization is None else format(report.actor_utilization, '.0%')}"
        )
        self.last_report = replace(report, rows_in=sampled.sample_rows)
        return trial

    def prune(self, candidates: list[Candidate], report: RunReport, max_candidates: int) -> list[Candidate]:
        """Simulate every candidate with costs calibrated from ``report``; keep the promising ones."""
        try:
            costs = costs_from_report(report.to_dict())
        except DaftscaleError as exc:
            self.notes.append(f"simulator not calibrated ({exc}): no candidate pruned")
            return candidates[:max_candidates]
        for cand in candidates:
            try:
                sim = simulate(self.plans[cand.name], self.cluster, costs=costs)
                self.predicted[cand.name] = (sim.makespan_s, bool(sim.oom))
            except DaftscaleError as exc:
                self.notes.append(f"{cand.name}: not simulated ({exc})")
        best = min((p for p, _ in self.predicted.values()), default=None)
        keep: list[Candidate] = []
        ranked = sorted(candidates, key=lambda c: (not c.is_formula, self.predicted.get(c.name, (math.inf,))[0]))
        for cand in ranked:
            seconds, oom = self.predicted.get(cand.name, (None, False))
            bad = seconds is not None and best is not None and seconds > PRUNE_SLOWER_THAN * best
            if cand.is_formula or (not oom and not bad and len(keep) < max_candidates):
                keep.append(cand)
                continue
            why = (
                "out of memory"
                if oom
                else f"{seconds / best:.1f}× the best"
                if bad and seconds is not None and best
                else f"not in the top {max_candidates}"
            )
            self.trials.append(
                Trial(
                    cand.name,
                    cand.batch_size,
                    cand.partitions,
                    cand.into_batches,
                    predicted_s=seconds,
                    predicted_oom=oom,
                    pruned=True,
                    note=why,
                )
            )
        self.notes.append(f"simulator calibrated from the formula plan's first run ({costs.source})")
        return keep

    # -- the search --------------------------------------------------------------------------------

    def run(
        self,
        sample: float,
        batch_multiples: tuple[float, ...],
        partition_multiples: tuple[float, ...],
        eta: int,
        max_candidates: int,
    ) -> TuneResult:
        """The whole search: the grid, the calibrating first run and the pruning, the rungs, the verdict."""
        rows = self.data.rows
        sample_rows = max(1, min(rows, round(rows * sample)))
        grid = self.make_grid(batch_multiples, partition_multiples)
        biggest_batch = max(c.batch_size for c in grid)
        min_rows = min(sample_rows, MIN_BATCHES_PER_ACTOR * biggest_batch * self.formula.concurrency)
        self.say.say(
            f"[bold]daftscale tune[/bold]: {len(grid)} candidates around the formula plan "
            f"({_with_batch(self.formula)}), on up to {sample_rows:,} of {rows:,} rows"
        )
        first, survivors, schedule = self.calibrate(grid, sample_rows, eta, min_rows, max_candidates)
        results = self.halve(grid, first, survivors, schedule)
        return self.finish(results, grid, sample_rows)

    def make_grid(self, batch_multiples: tuple[float, ...], partition_multiples: tuple[float, ...]) -> list[Candidate]:
        """The candidates around the formula plan, with their full-data plans in ``self.plans``.

        On the native runner a shuffle plan's partitions are not tuned (Daft ignores partition operations there).
        """
        formula, data = self.formula, self.data
        task_multiples = partition_multiples
        if formula.strategy == "shuffle" and self.runner == "native":
            task_multiples = (1.0,)  # Daft's native runner ignores partition operations: nothing to tune there
            self.notes.append("native runner: partitions are a no-op there, so only the batch size is tuned")
        biggest = max(1, round(formula.batch_size * max(batch_multiples)))
        max_batch = max_batch_size(formula, data, self.cluster, self.kwargs, biggest)
        grid = candidate_grid(
            formula.batch_size,
            partitions=formula.partitions if formula.strategy == "shuffle" else None,
            into_batches=formula.into_batches if formula.strategy == "streaming" else None,
            rows=data.rows,
            batch_multiples=batch_multiples,
            task_multiples=task_multiples,
            max_batch_size=max_batch,
        )
        for cand in grid:
            self.plans[cand.name] = candidate_plan(formula, cand, data, self.cluster, self.kwargs)
        return grid

    def calibrate(
        self, grid: list[Candidate], sample_rows: int, eta: int, min_rows: int, max_candidates: int
    ) -> tuple[Trial, list[Candidate], list[Rung]]:
        """The first real measurement: the formula plan on the smallest rung's sample. It calibrates the
        simulator, which prunes the grid; returns that trial, the survivors and their halving schedule."""
        first_rows = halving_schedule(min(len(grid), max_candidates), sample_rows, eta=eta, min_rows=min_rows)[0].rows
        first = self.measure(grid[0], 0, first_rows)
        survivors = self.prune(grid, self.last_report, max_candidates) if len(grid) > 1 and self.last_report else grid
        schedule = halving_schedule(len(survivors), sample_rows, eta=eta, min_rows=min_rows)
        if len(schedule) > 1 and schedule[0].rows > first_rows:
            # Fewer survivors than planned for: start the halving on the calibration run's rows so that run
            # counts as the formula's first-rung measurement (rows still never shrink from rung to rung).
            schedule[0] = Rung(schedule[0].candidates, first_rows)
        if schedule[0].rows != first_rows:
            first.note = "calibration run"
        self.say.say(
            f"  {len(grid) - len(survivors)} pruned by the simulator; halving: "
            + ", ".join(f"{r.candidates} on {r.rows:,} rows" for r in schedule)
        )
        return first, survivors, schedule

    def halve(
        self, grid: list[Candidate], first: Trial, survivors: list[Candidate], schedule: list[Rung]
    ) -> dict[int, dict[str, Trial]]:
        """Successive halving: each rung runs its candidates (the formula plan first), the fastest go on.

        Stops early when the budget would not hold the next trial and the runs that confirm a win.
        """
        results: dict[int, dict[str, Trial]] = {}
        alive = survivors
        for index, rung in enumerate(schedule):
            results[index], alive, stopped = self.run_rung(index, rung, alive, first, grid)
            if stopped:
                self.stopped_by_budget = True
                self.notes.append(f"budget of {self.budget_s:g} s reached during rung {index}: best so far wins")
                break
            if index == 0 and self.fit_pending:
                self.notes.append("measured costs: the first rung ran one batch size only, so no cost fit")
            if index + 1 < len(schedule):
                keep = schedule[index + 1].candidates
                ranked = sorted((t for t in results[index].values() if t.full_s), key=lambda t: -trial_speed(t))
                names = {t.candidate for t in ranked[:keep]} | {grid[0].name}
                alive = [c for c in alive if c.name in names]
        return results

    def run_rung(
        self, index: int, rung: Rung, alive: list[Candidate], first: Trial, grid: list[Candidate]
    ) -> tuple[dict[str, Trial], list[Candidate], bool]:
        """One rung: ``(its trials, the candidates alive after it, whether the budget stopped it)``.

        The first rung reuses the calibration run when its rows match, and adds the measured-costs
        candidate as soon as two batch sizes have run.
        """
        trials: dict[str, Trial] = {}
        ordered = sorted(alive, key=lambda c: (not c.is_formula, self.predicted.get(c.name, (0.0,))[0]))
        for cand in ordered:
            if index == 0 and cand.is_formula and first.sample_rows == rung.rows:
                trials[cand.name] = first
                continue
            if self.out_of_time(rung.rows, then=CONFIRMATION_RUNS) and (index > 0 or not cand.is_formula):
                return trials, alive, True
            trials[cand.name] = self.measure(cand, index, rung.rows)
            if index == 0 and (extra := self.run_measured_costs(grid, trials, rung.rows)):
                alive = [*alive, extra]
        return trials, alive, False

    def run_measured_costs(self, grid: list[Candidate], first_rung: dict[str, Trial], rows: int) -> Candidate | None:
        """Once the first rung has run two batch sizes, make the measured-costs candidate and run it there.

        As soon as the calls can separate the two costs, not after the rung: on a tight budget the rung may
        end before its last candidate, and this one is the likeliest to matter.
        """
        if not self.fit_pending or len({t.batch_size for t in self.trials if t.measured}) < 2:
            return None
        self.fit_pending = False
        extra = self.measured_costs_candidate(grid)
        if extra is None:
            return None
        if self.out_of_time(rows, then=CONFIRMATION_RUNS):
            self.notes.append(f"no time left to run the {extra.name} candidate")
            return None
        first_rung[extra.name] = self.measure(extra, 0, rows)
        return extra

    def measured_costs_candidate(self, grid: list[Candidate]) -> Candidate | None:
        """The formula plan made with the UDF costs fitted over the calls measured so far, as a new candidate.

        Appended to ``grid`` (so a confirmation run finds it) unless its numbers are already there. The
        user's declared batch size is dropped for it: the batch size is what the fit is for.
        """
        from daftscale.plan import plan as make_plan
        from daftscale.profile import UdfProfile
        from daftscale.report import fit_udf_cost

        fit = fit_udf_cost(self.calls)
        if fit is None or fit["seconds_per_row"] <= 0:
            self.notes.append("measured costs: the UDF calls so far do not separate per-call from per-row cost")
            return None
        profile = UdfProfile(
            seconds_per_row=fit["seconds_per_row"],
            seconds_per_batch=fit["seconds_per_batch"],
            rows_sampled=sum(int(c["rows"]) for c in self.calls),
            batches=len(self.calls),
        )
        kwargs = {k: v for k, v in self.kwargs.items() if k != "batch_size"}
        measured = make_plan(self.data, self.cluster, **kwargs, udf_profile=profile)
        fitted = (
            f"UDF costs fitted over the trials' {len(self.calls):,} calls: "
            f"{profile.seconds_per_batch * 1e3:.1f} ms per call + {profile.seconds_per_row * 1e3:.3f} ms per row"
        )
        formula = self.formula
        if measured.strategy != formula.strategy:
            self.notes.append(f"measured costs: {fitted}; they change the strategy, which the tuner keeps")
            return None
        shuffle = formula.strategy == "shuffle"
        numbers = (
            measured.batch_size,
            measured.partitions if shuffle else None,
            None if shuffle else measured.into_batches,
        )
        same = next((c for c in grid if (c.batch_size, c.partitions, c.into_batches) == numbers), None)
        if same is not None:
            self.notes.append(f"measured costs: {fitted}; the planner then gives {same.name}'s numbers")
            return None
        formula_task = formula.partitions if shuffle else formula.into_batches
        cand = Candidate(
            "measured costs",
            *numbers,
            batch_multiple=measured.batch_size / formula.batch_size,
            task_multiple=(numbers[1] or numbers[2] or 1) / (formula_task or 1),
        )
        self.plans[cand.name] = replace(
            measured, steps=(*measured.steps, f"Tuner candidate: the formula plan with the {fitted}.")
        )
        grid.append(cand)
        self.notes.append(f"measured costs: {fitted}; candidate {_with_batch(measured)}")
        return cand

    def finish(self, results: dict[int, dict[str, Trial]], grid: list[Candidate], sample_rows: int) -> TuneResult:
        # The last rung in which the formula plan ran decides (the formula runs first in every rung).
        last = max(i for i, r in results.items() if "formula" in r and r["formula"].full_s)
        rung = results[last]
        base = trial_speed(rung["formula"])
        measured = [t for t in rung.values() if t.full_s]
        winner = max(measured, key=trial_speed)
        speedup = trial_speed(winner) / base if base else None
        if winner.candidate != "formula" and (speedup or 0) < 1 + MIN_IMPROVEMENT:
            self.notes.append(f"best challenger {winner.candidate} got {speedup or 0:.2f}× the formula: within noise")
            winner = rung["formula"]
        elif winner.candidate != "formula":
            earlier = self.won_earlier(winner.candidate, results, last)
            if earlier is not None:
                speedup = earlier
            else:
                winner, speedup = self.confirm(winner, rung["formula"], grid, last)
        chosen = self.plans[winner.candidate]
        formula_speedup = speedup if winner.candidate != "formula" else 1.0
        runs = sum(1 for t in self.trials if t.measured)
        best = tuned_plan(chosen, self.formula, winner, rung["formula"], len(grid), runs, formula_speedup)
        elapsed = time.monotonic() - self.started
        return TuneResult(
            best=best,
            formula=self.formula,
            trials=self.trials,
            cached=False,
            elapsed_s=elapsed,
            speedup=round(formula_speedup, 4) if formula_speedup else None,
            sample_rows=winner.sample_rows or sample_rows,
            rows=self.data.rows,
            notes=self.notes,
        )

    def won_earlier(self, name: str, results: dict[int, dict[str, Trial]], last: int) -> float | None:
        """The speed-up over the rungs where ``name`` and the formula plan both ran, if it won an earlier one.

        Each rung runs the formula plan afresh, so a candidate that beat it by ``MIN_IMPROVEMENT`` in an
        earlier rung as well as in the deciding one has already won a repeat, on other rows; it needs no
        confirmation runs. The speed-up is the formula's total predicted time over the candidate's.
        """
        pairs = [
            (r["formula"].full_s, r[name].full_s)
            for i, r in sorted(results.items())
            if i <= last and "formula" in r and name in r and r["formula"].full_s and r[name].full_s
        ]
        won = [f / c for f, c in pairs if f and c and f / c >= 1 + MIN_IMPROVEMENT]
        if len(pairs) < 2 or len(won) < 2 or pairs[-1][0] / pairs[-1][1] < 1 + MIN_IMPROVEMENT:
            return None
        speedup = sum(f for f, _ in pairs) / sum(c for _, c in pairs)
        if speedup < 1 + MIN_IMPROVEMENT:
            return None
        self.notes.append(
            f"{name} beat the formula plan in {len(won)} of the {len(pairs)} rungs both ran "
            f"({', '.join(f'{w:.2f}×' for w in won)}): taken without further runs"
        )
        return speedup

    def confirm(self, winner: Trial, formula: Trial, grid: list[Candidate], rung: int) -> tuple[Trial, float]:
        """Run the winner and the formula plan once more each, on the same rows, before trusting the win.

        Short runs on a busy machine carry start-up noise of tens of percent, so one lucky run must not
        replace the formula plan: the challenger has to win the repeat as well, and by MIN_IMPROVEMENT
        over the two runs together. Without time for the repeat the formula plan stays: one run each cannot
        tell a 5 % gain from this machine's noise (the bench's W4 search, cut short by its budget, once took
        ``into_batches(23)`` from single runs on a 750-row sample, and it ran 1.22× slower on all the data).
        """
        base = trial_speed(formula)
        single = trial_speed(winner) / base if base else 0.0
        if self.out_of_time(winner.sample_rows, then=CONFIRMATION_RUNS - 1):
            self.notes.append(
                f"{winner.candidate} won its one run ({single:.2f}×) but there was no time left to repeat it: "
                "the formula plan stays"
            )
            return formula, 1.0
        by_name = {c.name: c for c in grid}
        again_winner = self.measure(by_name[winner.candidate], rung, winner.sample_rows)
        again_formula = self.measure(by_name[formula.candidate], rung, winner.sample_rows)
        again_winner.note = again_formula.note = "confirmation"
        # Over both runs of each: the formula's total predicted time over the challenger's.
        challenger = (winner.full_s or math.inf) + (again_winner.full_s or math.inf)
        baseline = (formula.full_s or math.inf) + (again_formula.full_s or math.inf)
        speedup = baseline / challenger if math.isfinite(challenger) and math.isfinite(baseline) else 0.0
        if trial_speed(again_winner) <= trial_speed(again_formula) or speedup < 1 + MIN_IMPROVEMENT:
            self.notes.append(
                f"{winner.candidate} won once ({single:.2f}×) but not the repeat ({speedup:.2f}× over both): "
                "the formula plan stays"
            )
            return formula, 1.0
        return winner, speedup


def tuned_plan(
    chosen: ScalingPlan,
    formula: ScalingPlan,
    winner: Trial,
    baseline: Trial,
    candidates: int,
    trials: int,
    speedup: float,
) -> ScalingPlan:
    """The winner's full-data plan with a step (and ``inputs["tuned"]``) saying how it was tuned.

    ``speedup`` is over the runs that decided the win: the deciding rung's and its confirmation repeat,
    or every rung in which both ran when the winner had already won an earlier one.
    """
    how = (
        f"Tuned by daftscale tune: {candidates} candidates around the formula plan ({_with_batch(formula)}), "
        f"{trials} measured runs with successive halving on samples of up to {winner.sample_rows:,} rows "
        f"(df.limit) of {formula.inputs.get('rows', 0):,}."
    )
    if winner.candidate == "formula":
        verdict = (
            f"No candidate beat the formula plan by {MIN_IMPROVEMENT:.0%} on the {winner.sample_rows:,}-row sample "
            f"(it predicted {baseline.full_s or 0:.1f} s on all the data): the formula plan is kept."
        )
    else:
        verdict = (
            f"The winner, {_with_batch(chosen)} ({winner.candidate}), predicted {winner.full_s or 0:.1f} s on all the "
            f"data against the formula plan's {baseline.full_s or 0:.1f} s from runs on the {winner.sample_rows:,}-row "
            f"sample: {speedup:.2f}× ({(speedup - 1):+.0%}) over the runs that decided it (a repeat, or earlier rungs)."
        )
    tuned = {
        "from": _with_batch(formula),
        "candidate": winner.candidate,
        "sample_rows": winner.sample_rows,
        "rows_per_s": winner.rows_per_s,
        "formula_rows_per_s": baseline.rows_per_s,
        "full_s": winner.full_s,
        "formula_full_s": baseline.full_s,
        "speedup": round(speedup, 4),
    }
    return replace(
        chosen,
        reason=f"{chosen.reason} (tuned)",
        inputs={**chosen.inputs, "tuned": tuned},
        steps=(*chosen.steps, how, verdict),
    )


__all__ = [
    "CONFIRMATION_RUNS",
    "MIN_BATCHES_PER_ACTOR",
    "PRUNE_SLOWER_THAN",
    "Search",
    "candidate_plan",
    "max_batch_size",
    "tuned_plan",
]
