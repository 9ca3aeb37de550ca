"""Every exception daftscale raises on purpose.

The tree::

    DaftscaleError                  root: the CLI turns any of these into one line and exit code 2
    ├── ConfigError (+ValueError)   a number, size or option that cannot be right
    ├── ProfileError                the data cannot be profiled (missing, empty, not Parquet, corrupt)
    ├── ClusterError                the cluster cannot be described or reached
    ├── PlanError                   no sound plan exists for these inputs
    │   └── GpuRequestError         the UDF asks for GPUs the cluster does not have
    ├── PipelineError               a pipeline file that does not import or build a DataFrame
    └── RunError                    a run that failed or lost rows

Each message names the problem and the fix in one line, e.g.
``--batch-size must be a positive integer, got 0: pass a value of 1 or more``.
"""

from __future__ import annotations


class DaftscaleError(Exception):
    """Root of every daftscale error; ``str(err)`` is one line meant for the user."""

    def __init__(self, message: str) -> None:
        # Messages are shown as one line on stderr, so newlines are folded here once.
        super().__init__(" ".join(str(message).split()))


class ConfigError(DaftscaleError, ValueError):
    """A user-supplied number, size or option is invalid."""


class ProfileError(DaftscaleError):
    """The data source cannot be profiled."""


class ClusterError(DaftscaleError):
    """The cluster cannot be described, discovered or reached."""


class PlanError(DaftscaleError):
    """No sound plan exists for the given profile and cluster."""


class GpuRequestError(PlanError):
    """The UDF asks for more GPUs per actor than a node of the cluster has.

    ``gpus`` (per actor) and ``gpus_per_node`` let a caller that knows where the request came from (the
    CLI: ``--udf-gpus``, or a script's ``@daft.cls(gpus=...)``) name it and the options of its own command.
    """

    def __init__(self, message: str, *, gpus: float, gpus_per_node: float) -> None:
        super().__init__(message)
        self.gpus = gpus
        self.gpus_per_node = gpus_per_node


class PipelineError(DaftscaleError):
    """A pipeline file fails to import or does not build a Daft DataFrame."""


class RunError(DaftscaleError):
    """A run failed, or its output does not account for every input row.

    ``failed_calls``: the UDF calls that raised, as recorded (rows, error, ``memory_bytes``), when the
    run failed because one did, and ``calls`` the ones that finished before; calibration reads them (a
    batch too big for memory is not a lost cause, and the smaller calls say how much memory a row needs).
    """

    def __init__(
        self,
        message: str,
        *,
        failed_calls: list[dict[str, object]] | None = None,
        calls: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.failed_calls = list(failed_calls or [])
        self.calls = list(calls or [])
        # Set by the run when its plan was made without a sample run (calibration skipped: the footers showed
        # a balanced input, or the job was tiny): a UDF that ran out of memory then calls for one.
        self.plan_unmeasured = False

    @property
    def first_failed_call(self) -> dict[str, object]:
        """The failed call that started first (``{}`` when none was recorded): the one whose error a message names."""
        return min(self.failed_calls, key=lambda c: float(c.get("start") or 0.0), default={})  # type: ignore[arg-type]

    @property
    def out_of_memory(self) -> bool:
        """Whether a UDF call failed for memory (a ``MemoryError``, or a GPU's "out of memory")."""
        return any(is_memory_error(str(call.get("error", ""))) for call in self.failed_calls)


def is_memory_error(text: str) -> bool:
    """Whether an error's text (``"TypeName: message"``) is running out of memory, on the host or a GPU."""
    return "MemoryError" in text or "out of memory" in text.lower()


__all__ = [
    "ClusterError",
    "ConfigError",
    "DaftscaleError",
    "PipelineError",
    "PlanError",
    "ProfileError",
    "RunError",
]
