"""The one exception type the data layer raises for bad names, missing files and bad downloads."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be loaded; the message names the bad value and how to fix it.

    A ValueError subclass so callers validating a config can catch both alike.
    """
