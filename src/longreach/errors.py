"""The one exception type for bad input: the CLI prints its message on one line and exits non-zero."""


class LongreachError(Exception):
    """A problem the user can fix (bad value, missing file, impossible request); the message says how."""


class LongreachWarning(UserWarning):
    """Something the user should know that does not stop the run (a slow path, a doubtful setting); the CLI prints
    its message as one line (``longreach: warning: ...``)."""
