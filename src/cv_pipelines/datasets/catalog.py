"""The project's data catalog: Kedro's, passing one-sentence errors through as they are."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
from kedro.io import DataCatalog, DatasetError


def _sentence_in(error: BaseException) -> click.ClickException | None:
    """The one-sentence error (a ``ClickException``) that ``error`` was raised from, if any."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, click.ClickException):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__
    return None


class ProjectDataCatalog(DataCatalog):
    """Kedro's ``DataCatalog``, except that a dataset's one-sentence error reaches the caller as itself.

    Kedro wraps whatever a dataset's load or save raises in a ``DatasetError`` (twice: the
    dataset's wrapper, then the catalog's ``<name>: ...``), and the ``kedro`` command
    prints a ``DatasetError`` with its traceback. A ``ConfigurationError`` or
    ``ExternalServiceError`` raised inside a dataset (a registry lock that timed out, a
    dataset version that names nothing) is re-raised as it is, so the command line
    prints its sentence with its exit status, and callers can catch its type.
    """

    def load(self, ds_name: str, version: str | None = None) -> Any:
        """Kedro's ``load``; a one-sentence error raised inside the dataset is re-raised as it is."""
        with _sentences_passed_through():
            return super().load(ds_name, version)

    def save(self, ds_name: str, data: Any) -> None:
        """Kedro's ``save``; a one-sentence error raised inside the dataset is re-raised as it is."""
        with _sentences_passed_through():
            super().save(ds_name, data)


@contextmanager
def _sentences_passed_through() -> Iterator[None]:
    try:
        yield
    except DatasetError as exc:
        sentence = _sentence_in(exc)
        if sentence is None:
            raise
        raise sentence from exc
