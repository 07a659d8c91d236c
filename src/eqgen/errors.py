"""The one exception type users see: the CLI prints its message on one line and exits non-zero."""


class EqgenError(Exception):
    """A problem with the user's input (arguments, files, checkpoints), not a bug in eqgen."""
