"""What every config module shares: the error type and the check that names the key."""
from __future__ import annotations


class ConfigError(ValueError):
    """A configuration that cannot be honoured."""


def check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")
