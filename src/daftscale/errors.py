"""Every exception daftscale raises on purpose.

The tree::

    DaftscaleError                  root: the CLI turns any of these into one line and exit code 2
    ├── ConfigError (+ValueError)   a number, size or option that cannot be right
    ├── ProfileError                the data cannot be profiled (missing, empty, not Parquet, corrupt)
    ├── ClusterError                the cluster cannot be described or reached
    ├── PlanError                   no sound plan exists for these inputs
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


class PipelineError(DaftscaleError):
    """A pipeline file fails to import or does not build a Daft DataFrame."""


class RunError(DaftscaleError):
    """A run failed, or its output does not account for every input row."""


__all__ = [
    "ClusterError",
    "ConfigError",
    "DaftscaleError",
    "PipelineError",
    "PlanError",
    "ProfileError",
    "RunError",
]
