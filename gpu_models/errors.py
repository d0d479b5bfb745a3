"""The one error type every gpusim layer raises for bad input.

Anything a user can get wrong (an unknown GPU, an impossible kernel, a cyclic graph, a
malformed trace or program) raises :class:`GpusimError` with a message that names the
offending item. The CLI turns it into a one-line message and exit code 2; library callers
can catch it (it is a ``ValueError``) without catching programming errors.
"""

from __future__ import annotations


class GpusimError(ValueError):
    """Bad input to gpusim: the message names the field, item or file that is wrong."""
