"""Keep every tool of the stack offline and quiet, whoever starts it.

Imported by ``settings.py``, so it takes effect for ``kedro run``, ``kedro viz``,
``kedro jupyter`` and the tests alike, not only for the Makefile's commands.
Values a user set explicitly in the environment are left alone.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

#: Telemetry switches of every tool we ship with. MLflow honours only the literal
#: string "true" for DO_NOT_TRACK.
TELEMETRY_OFF = {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "YOLO_OFFLINE": "1",
    # Weights or fonts must never be fetched at run time; Hugging Face is pulled in by
    # some Ultralytics paths.
    "HF_HUB_OFFLINE": "1",
    # ONNX Runtime (1.29 on) uploads usage events from Linux too, about 9 s after a
    # session starts; read once, when its environment is first created.
    "ORT_DISABLE_TELEMETRY": "1",
}

#: MLflow's client retries a tracking server that does not answer 7 times with a doubling
#: back-off (about 2 minutes per call, and a run makes dozens): a server that went away
#: would hang a run for an hour before its one-sentence error. Four tries over about 15 s
#: still ride out a server restart. Set the variables to change them.
MLFLOW_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
}


def apply_offline_defaults(project_root: Path) -> None:
    """Turn telemetry off and keep Ultralytics' settings inside the project.

    Ultralytics writes a settings file into ``YOLO_CONFIG_DIR`` (the user's home by
    default) and turns its MLflow callback on there; a project-local folder keeps
    that callback off without touching the user's other projects.
    """
    from cv_pipelines.config.console import apply_console_defaults

    for name, value in {**TELEMETRY_OFF, **MLFLOW_CLIENT_DEFAULTS}.items():
        os.environ.setdefault(name, value)
    apply_console_defaults()
    config_dir = project_root / ".ultralytics"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))


def ultralytics_settings_offline(project_root: Path | None = None) -> None:
    """Switch off Ultralytics' own integrations; call before training or predicting.

    Its MLflow callback logs into the run kedro-mlflow opened and then ends it, and
    the sync/comet/clearml/dvc callbacks try to reach the network or write their own
    records. Its folders (runs, weights, data sets) default to the working directory
    and the home folder; they are kept inside the project's ``data/`` instead.
    """
    from ultralytics import settings  # heavy import kept local

    wanted: dict[str, object] = {
        "mlflow": False,
        "sync": False,
        "wandb": False,
        "comet": False,
        "clearml": False,
        "dvc": False,
        "raytune": False,
        "tensorboard": False,
        "vscode_msg": False,
        "openvino_msg": False,
    }
    if project_root is not None:
        wanted |= {
            "runs_dir": str(project_root / "data/models/ultralytics_runs"),
            "weights_dir": str(project_root / "data/models/weights"),
            "datasets_dir": str(project_root / "data/exports"),
        }
    changed = {key: value for key, value in wanted.items() if key in settings and settings.get(key) != value}
    if changed:
        settings.update(changed)
    # Quiet by default, YOLO_VERBOSE=False put Ultralytics' logger at ERROR on import (no
    # banners, no per-batch bars, no "Creating new Ultralytics Settings"); its warnings
    # (a corrupt label, a cache it cannot write) are the user's business, so they show.
    from cv_pipelines.config.console import restore_logger_level

    restore_logger_level("ultralytics")


@contextlib.contextmanager
def no_font_download() -> Iterator[None]:
    """A context in which Ultralytics never fetches its plotting font from the internet.

    ``check_det_dataset`` and the plot annotator call ``check_font``, which downloads
    Arial when no local copy exists: offline that waits on the network, and nothing may
    be downloaded at run time anyway. Without it the annotator falls back to PIL's
    built-in font, which is all the plots need.

    The patch is process-wide, so it is counted: it stays on while any thread is inside
    the context (the matrix trains candidates in parallel under ThreadRunner, and one
    finishing must not turn it off under another still training).
    """
    global _font_patch, _font_patch_users
    with _font_patch_lock:
        if _font_patch_users == 0:
            from unittest import mock

            from ultralytics.data import utils as data_utils  # heavy imports kept local
            from ultralytics.utils import plotting

            _font_patch = contextlib.ExitStack()
            for module in (data_utils, plotting):
                _font_patch.enter_context(mock.patch.object(module, "check_font", lambda *args, **kwargs: None))
        _font_patch_users += 1
    try:
        yield
    finally:
        with _font_patch_lock:
            _font_patch_users -= 1
            if _font_patch_users == 0 and _font_patch is not None:
                _font_patch.close()
                _font_patch = None


_font_patch_lock = threading.Lock()
_font_patch: contextlib.ExitStack | None = None
_font_patch_users = 0
