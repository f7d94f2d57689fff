"""What can go wrong with an export, as errors whose message names the fix.

Library errors, not Kedro ones: the export's catalog dataset and nodes turn them into
the one-sentence ``ConfigurationError`` of the command line.
"""

from __future__ import annotations


class ExportSelectionError(ValueError):
    """The registries hold nothing exportable for the label set; the message says why."""


class ExportCheckError(RuntimeError):
    """Ultralytics' or pycocotools' checks reject the export; the message names the file and the fix."""


class ExportNotFoundError(LookupError):
    """No complete export answers the request: none at all, not that version, or not that format.

    The message says what exists; the caller, who knows which parameter asked, adds which key to change.
    """


class ExportLockedError(RuntimeError):
    """Another export of the same label set is being written into the same folder."""
