"""What a user can cause (a bad config, missing data, a mismatched checkpoint or weights file, an
unknown model) and how the command-line tools report it.

Every such error derives from `UserError`; `reported` turns exactly those into one line on stderr
and exit status 2. Anything else is a bug in this package and surfaces as a traceback.
"""

from __future__ import annotations

import contextlib
import sys


class UserError(ValueError):
    """A mistake in what the user gave us; the message says what is wrong and how to fix it."""


@contextlib.contextmanager
def reported():
    """`error: <message>` on stderr and exit status 2 for a `UserError`; nothing else caught."""
    try:
        yield
    except UserError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)
