"""The one exception type that users can cause and fix.

Anything raised as ``UserError`` reaches the user as one line (``error: ...``) and a non-zero
exit, never as a traceback: the message must name the file, field or option and say the fix.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""


def first_line(exc: BaseException) -> str:
    """The first line of a library's error (at most 300 characters), for a one-line UserError."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
