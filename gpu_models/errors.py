"""The one error type every gpusim layer raises for bad input.

Anything a user can get wrong (an unknown GPU, an impossible kernel, a cyclic graph, a
malformed trace or program) raises :class:`GpusimError` with a message that names the
offending item. The CLI turns it into a one-line message and exit code 2; library callers
can catch it (it is a ``ValueError``) without catching programming errors.

What gpusim does *instead* of what was asked — a fallback (bf16 on a GPU without bf16
tensor cores runs at the FP32 rate) or an option it ignores (``--origin`` without the
``scaled`` cost model) — is a :class:`GpusimWarning` (``warnings.warn``): never silent,
never fatal. The CLI prints each as one ``gpusim: warning: ...`` line.
"""

from __future__ import annotations


class GpusimError(ValueError):
    """Bad input to gpusim: the message names the field, item or file that is wrong."""


class GpusimWarning(UserWarning):
    """gpusim did something other than what was asked (a fallback, an ignored option)."""
