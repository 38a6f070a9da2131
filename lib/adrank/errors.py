"""Errors a person can act on: a job prints their one line and exits non-zero, no traceback."""

from __future__ import annotations


class InputError(ValueError):
    """The inputs or the request break a rule (a missing date, a stray file, no held-out day).

    Raised before anything is written; the message is one line that names what is wrong and
    what to do. :func:`adrank.runs.run_job` prints it and returns exit status 1.
    """
