"""Keep the credentials out of Kedro's hook traces.

With the ``kedro.framework.hooks.manager`` logger at DEBUG, Kedro has pluggy trace every
hook call with its arguments, and ``after_catalog_created`` gets ``conf_creds``: every
entry of ``credentials.yml``, the CVAT password included, in plain text. The filter
here replaces that argument's value in the trace; the rest of the trace stays.
"""

from __future__ import annotations

import logging

#: The logger pluggy's hook traces are written to (Kedro's hook manager).
HOOK_TRACE_LOGGER = "kedro.framework.hooks.manager"
#: Hook arguments whose values are never traced.
SECRET_ARGUMENTS = ("conf_creds",)
REDACTED = "<redacted>"


def redact_trace(message: str) -> str:
    """``message`` (a pluggy hook trace) with the values of ``SECRET_ARGUMENTS`` replaced.

    pluggy writes an argument as ``<indent>name: value`` on one line, or as
    ``<indent>name:`` followed by the value's lines indented further; both are replaced
    by one ``<indent>name: <redacted>`` line.
    """
    lines = message.splitlines(keepends=True)
    kept: list[str] = []
    secret_indent: int | None = None
    for line in lines:
        indent = len(line) - len(line.lstrip(" "))
        if secret_indent is not None:
            if line.strip() and indent > secret_indent:
                continue  # a line of the secret value's block
            secret_indent = None
        name = line.strip().split(":", 1)[0]
        if name in SECRET_ARGUMENTS and line.strip().startswith(f"{name}:"):
            kept.append(f"{' ' * indent}{name}: {REDACTED}\n")
            secret_indent = indent
        else:
            kept.append(line)
    return "".join(kept)


class HookTraceRedaction(logging.Filter):
    """Lets every record through, with the secret arguments of a hook trace redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact ``record``'s message in place when it traces a secret argument; always True."""
        if isinstance(record.msg, str) and any(f"{name}:" in record.msg for name in SECRET_ARGUMENTS):
            record.msg = redact_trace(record.msg)
        return True


def keep_credentials_out_of_hook_traces() -> None:
    """Install ``HookTraceRedaction`` on Kedro's hook-trace logger, once per process.

    A filter on the logger (not on a handler) applies to every handler the trace reaches,
    and ``dictConfig`` (Kedro applying ``logging.yml``) leaves a logger's filters in place.
    """
    logger = logging.getLogger(HOOK_TRACE_LOGGER)
    if not any(isinstance(existing, HookTraceRedaction) for existing in logger.filters):
        logger.addFilter(HookTraceRedaction())
