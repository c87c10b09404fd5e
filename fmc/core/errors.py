"""Exceptions that fmc's commands turn into one clear message and a non-zero exit code."""


class FmcError(Exception):
    """An error the user can fix; its message names the file or key and what to change."""


class FmcInputError(FmcError):
    """An input file or folder is missing, unreadable or not what fmc needs."""


class FmcConfigError(FmcError):
    """A configuration value is missing or invalid."""
