"""Every error vops raises on purpose.

    VopsError                 root; carries a one-line message and a hint (the fix)
    ├── UserError             a mistake the user can fix: bad flag, unknown run, bad URI (exit 2)
    │   └── ConfigError       a recipe or config file that does not validate
    ├── StorageError          a bucket or path that cannot be read or written
    │   └── ObjectNotFound    the key does not exist
    ├── CloudError            SkyPilot or a cloud API refused or failed
    ├── CheckpointError       no checkpoint verifies, or one is corrupt
    ├── DataError             input data that cannot be used at all
    └── ServeError            the serving tier cannot do what was asked

Foreign exceptions (botocore, google.api_core, sqlite3, ...) are translated at the module
that calls the foreign library and re-raised ``from`` the original, so ``--debug`` shows both.
"""

from __future__ import annotations


class VopsError(Exception):
    """Root of every vops error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and its hint on one line, as the CLI prints it."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


class UserError(VopsError):
    exit_code = 2


class ConfigError(UserError):
    pass


class StorageError(VopsError):
    exit_code = 2


class ObjectNotFound(StorageError):
    pass


class CloudError(VopsError):
    exit_code = 2


class CheckpointError(VopsError):
    pass


class DataError(VopsError):
    exit_code = 2


class ServeError(VopsError):
    pass
