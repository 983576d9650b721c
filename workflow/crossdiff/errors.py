"""One exception type for every input problem a user can fix."""


class CrossdiffError(Exception):
    """Bad input or configuration. The message names the file, the row or key, and what was expected."""
