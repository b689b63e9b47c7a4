"""The one error type users see: a one-line message naming the input and the problem."""


class PrunedgeError(Exception):
    """A user error (bad file, bad option). CLIs print it as one line and exit non-zero: line
    breaks that come from the input (an op name, a path) are shown escaped, never as new lines."""

    def __init__(self, message: str = ""):
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"))


def fail(subject, problem: str) -> "PrunedgeError":
    """Build an error whose message starts with the file or option it is about."""
    return PrunedgeError(f"{subject}: {problem}")
