"""Measurement health: what a run could not measure, said in its report instead of a clean success.

Owns the judgement of a run's measurement paths after the query: the UDF call records (could they be
read, how many never arrived, do they cover every row), the per-node memory samples (which nodes have no
peak, how many samples were missed) and the rows-in = rows-out check (on, or off and why). Each gap
becomes one line of ``RunReport.measurement_incomplete``, and a figure that could not be measured is set
to ``None`` (``null`` in JSON, "unknown" in text and HTML), never to 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from daftscale.config import format_bytes


@dataclass
class MeasurementHealth:
    """What one run's measurement paths delivered; :meth:`apply` writes it into the report.

    Attributes:
        records_error: why the UDF call records could not be read at the end (None: they were).
        events: every record read (starts, ends, failures, actor starts).
        query_finished: the query ran to its end (not stopped, not failed), so every started call ended.
        rows_in: rows at the scaling step.
        rows_checked: the rows-in = rows-out check ran.
        rows_check_note: why the default check could not decide (None: it could, or it was set by hand).
        memory_unmeasured: node: why its peak is unknown.
        memory_missed: node: samples missed.
        udfs_timed: the UDFs built to report their calls (a ``@daft.cls`` method, a pipeline file's actor UDF);
            none (0) means the job's UDFs, if any, ran untimed (a stateless ``@daft.func``, a legacy ``@daft.udf``).
    """

    records_error: str | None
    events: list[dict[str, Any]]
    query_finished: bool
    rows_in: int
    rows_checked: bool
    rows_check_note: str | None = None
    memory_unmeasured: dict[str, str] = field(default_factory=dict)
    memory_missed: dict[str, int] = field(default_factory=dict)
    udfs_timed: int | None = None

    def records_dropped(self) -> int | None:
        """At least how many call records never arrived; None when the records could not be read."""
        from daftscale.udf import records_dropped

        if self.records_error is not None:
            return None
        return records_dropped(self.events, query_finished=self.query_finished)

    def udf_rows_short(self) -> list[str]:
        """Per instrumented UDF whose records cover fewer rows than came in (rows through it, failed rows
        included), one line; only where every row must pass the UDF: the query finished and only
        row-preserving operators follow the scaling step (the rows check is on)."""
        if self.records_error is not None or not self.query_finished or not self.rows_checked:
            return []
        through: dict[str, int] = {}
        seen: set[str] = set()
        for e in self.events:
            if e.get("event") in ("end", "failed") and e.get("key") not in seen:
                seen.add(str(e.get("key")))
                through[str(e.get("udf", "?"))] = through.get(str(e.get("udf", "?")), 0) + int(e.get("rows", 0))
        return [
            f"the UDF {name}'s call records cover {rows:,} of {self.rows_in:,} rows in"
            for name, rows in sorted(through.items())
            if rows < self.rows_in
        ]

    def lines(self) -> list[str]:
        """One line per gap, each naming what is missing and what it affects."""
        out: list[str] = []
        dropped = self.records_dropped()
        if self.udfs_timed == 0:
            out.append(
                "no UDF of this job reports its calls (daftscale times @daft.cls batch methods and pipeline files' "
                "actor UDFs, not row-wise or async methods, a stateless @daft.func or a legacy @daft.udf): batches, "
                "actor utilisation and the UDF cost fit are unknown"
            )
        elif self.records_error is not None:
            out.append(
                f"the UDF call records could not be read ({self.records_error}): batches, utilisation, "
                "failed rows and the UDF cost fit are unknown"
            )
        elif dropped:
            out.append(
                f"at least {dropped:,} UDF call record(s) never reached the driver (not delivered, or the call "
                "was cut off by an actor that died): batches, utilisation, failed rows and the UDF cost fit "
                "undercount"
            )
        out += [line + ": records are missing" for line in self.udf_rows_short()]
        for node, why in sorted(self.memory_unmeasured.items()):
            out.append(f"peak memory of node {node} unknown: {why}")
        for node, missed in sorted(self.memory_missed.items()):
            if node not in self.memory_unmeasured:
                out.append(f"{missed:,} memory sample(s) missed on node {node}: its peak may be low")
        if self.rows_check_note:
            out.append(self.rows_check_note)
        return out

    def apply(self, report: Any) -> None:
        """Write the health into ``report`` (a :class:`~daftscale.report.RunReport`): unknown figures as
        None, the gaps in ``measurement_incomplete``, and the counters."""
        report.rows_checked = self.rows_checked
        report.records_dropped = self.records_dropped()
        report.memory_samples_missed = dict(sorted(self.memory_missed.items()))
        if self.records_error is not None or self.udfs_timed == 0:
            report.batches = None
            report.actor_utilization = None
            report.actor_work_utilization = None
            report.udf_profile = None
        if self.records_error is not None:
            report.rows_failed = None
        if self.udfs_timed == 0:
            report.actors_used = None
        if self.memory_unmeasured:
            nodes = dict(report.node_peak_memory_bytes)
            nodes.update(dict.fromkeys(self.memory_unmeasured))
            report.node_peak_memory_bytes = dict(sorted(nodes.items()))
            # The largest node may be the one not measured: the peak over nodes is not known.
            report.peak_memory_bytes = None
        report.measurement_incomplete = self.lines()


def format_optional_bytes(value: int | None) -> str:
    """Bytes as text, or "unknown" for a figure that could not be measured.

    >>> format_optional_bytes(None), format_optional_bytes(2048)
    ('unknown', '2.0 KiB')
    """
    return "unknown" if value is None else format_bytes(value)
