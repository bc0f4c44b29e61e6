"""The one root of every failure gating expects: bad input, a refused gate, a service that failed.

Each door renders a GatingError in one place (the CLI's `main`: its problems and their summary, or
`gating: error: <error>`, then exit `exit_code`; the App: the job's recorded error, or the HTTP
answer). Anything else that escapes is a bug and shows as one, a traceback and exit 1, never as
bad input; so bad input raises a GatingError, not a ValueError a bug could also raise.
"""

from __future__ import annotations

from collections.abc import Iterable

USAGE = 2  # bad input or usage the user can fix: a flag, a file, a setting, a revision
FAILED = 1  # a gate said no, or something the run needs failed: GitHub, a model provider, a write
EXIT_CODES = (USAGE, FAILED)


class GatingError(Exception):
    """An expected failure: `str(error)` says what failed and names the thing; `problems` lists
    each thing at fault when there are several (one line each); `exit_code` is USAGE or FAILED.

    `message` is the summary line: str(error), or for an error with problems what they are problems
    in ("3 problems in the LLM system manifest"). A few families narrow `message` to the bare reason
    (GitHubError: GitHub's words without the status; LimitError: without the file and line), so a
    door prints str(error) for an error without problems.
    """

    exit_code: int = USAGE

    def __init__(self, message: str = "", problems: Iterable[object] = (), *, exit_code: int | None = None):
        self.problems: list[str] = [str(p) for p in problems]
        if exit_code is not None:
            assert exit_code in EXIT_CODES, exit_code
            self.exit_code = exit_code
        super().__init__(message or "\n".join(self.problems))
        if self.problems and not message:
            self.message = count(len(self.problems), "problem")

    @property
    def message(self) -> str:
        told: str | None = self.__dict__.get("_message")
        return told if told is not None else str(self)

    @message.setter
    def message(self, value: str) -> None:
        self._message = value


class InputError(GatingError):
    """Input that does not read (a manifest, a dataset, a policy, a document past a limit): the same
    input fails the same way, so a job that meets it fails at once instead of being retried."""


class ServiceError(GatingError):
    """A service the run needs failed or refused: GitHub, a model provider. Not the user's input."""

    exit_code = FAILED


def count(n: int, what: str) -> str:
    """`1 problem`, `3 problems`: the summary line of an error with problems."""
    return f"{n} {what}{'s' if n != 1 else ''}"
