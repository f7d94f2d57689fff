"""Errors a user can fix, reported as one sentence instead of a traceback."""

from __future__ import annotations

import click


class ConfigurationError(click.ClickException):
    """A configuration or input mistake, with the fix in the message.

    A ``click.ClickException`` so the ``kedro`` command line prints only
    ``Error: <message>`` and exits with status 2 (a service failure exits with 3), before any work is done.
    """

    exit_code = 2


class ExternalServiceError(click.ClickException):
    """A service (CVAT, a DVC remote) failed; the message says what and what to do.

    Raised after the pipeline made sure nothing was half-changed, so re-running later is
    always safe.
    """

    exit_code = 3


class ParameterError(ConfigurationError, ValueError):
    """A parameter its schema refuses, read outside a Kedro session (``config.loader.section_parameters``).

    Also a ``ValueError``, as pydantic's own error was, for callers that validate values.
    """


class ModelRefusedError(click.ClickException):
    """A model the deployment will not register (the parity gate); the message gives the figures.

    Exit status 4: the configuration and the services were fine, the model was not.
    Nothing is registered and no alias moves; the logged model stays in its failed run.
    """

    exit_code = 4
