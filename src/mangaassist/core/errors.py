"""Errors as types. Each carries a message fit to show a user as it is."""


class MangaAssistError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(MangaAssistError):
    """A setting, file or environment variable is malformed; the message names which and where."""


class NotFoundError(MangaAssistError):
    """A named thing (run, revision, order, document) does not exist."""
