"""The one exception type for mistakes a user can fix."""


class UserError(ValueError):
    """Bad input or configuration. The CLI prints it as one line, never a traceback.

    Messages name the offending file, record, key or field, and the fix.
    """
