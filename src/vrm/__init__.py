"""vrm: visual reasoning models — build, train, search over and measure VLMs that reason."""

__version__ = "0.1.0"


class VrmError(Exception):
    """An error the user can fix (bad input, missing file, unknown option).

    The CLI prints it as one line and exits non-zero, never with a traceback.
    """
