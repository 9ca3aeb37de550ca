"""Progress output: the one place daftscale makes its stderr console.

Progress lines (a run's, a search's) go to stderr through rich so that stdout stays the command's
result; callers that pass their own ``console`` (tests, notebooks) get the lines there instead.
"""

from __future__ import annotations

from typing import Any


def stderr_console() -> Any:
    """A ``rich.console.Console`` on stderr (imported on first use: rich is only needed for output)."""
    from rich.console import Console

    return Console(stderr=True)


class ProgressLines:
    """Prints progress lines on ``console`` (default: :func:`stderr_console`), or nothing when disabled."""

    def __init__(self, enabled: bool, console: Any = None) -> None:
        self.console = (console or stderr_console()) if enabled else None

    def say(self, text: str) -> None:
        """Print one line (rich markup allowed), unless progress is off."""
        if self.console is not None:
            self.console.print(text, highlight=False)


__all__ = ["ProgressLines", "stderr_console"]
