"""The one exception type that users can cause and fix.

Anything raised as ``UserError`` reaches the user as one line (``error: ...``) and a non-zero
exit, never as a traceback: the message must name the file, field or option and say the fix.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
