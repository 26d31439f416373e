"""The index's user errors: each names the file, track or model at fault and how to fix it."""
from __future__ import annotations

from songspace.errors import UserError


class LibraryError(UserError):
    """A problem with the index, the model or a query that a user can fix; the message says how."""


class IndexNotFound(LibraryError):
    """No index where one was expected, or an index folder whose files are missing or damaged."""


class StaleIndex(LibraryError):
    """The index was built with another model checkpoint than the one given."""


class UnknownTrack(LibraryError):
    """A query names neither an existing file nor a track of the index."""
