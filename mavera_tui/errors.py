"""The errors a user can cause, in a module with no heavy imports (the CLI needs them first)."""


class ConfigError(ValueError):
    """A setting cannot be used (bad base URL, missing key): the message says how to fix it."""


class StoreError(Exception):
    """The database cannot be used: the message says what and what to do."""
