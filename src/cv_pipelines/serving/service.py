"""An HTTP detection service over the model registry's ``@champion`` (and ``@challenger``).

    python -m cv_pipelines.serving                      # deployment.* from conf/base (+ conf/local)
    python -m cv_pipelines.serving --port 8080 --canary-fraction 0.1

``POST /predict`` with the raw image bytes as the body (any content type) answers
``{"model_name", "version", "alias", "detections": [{"class_id", "class_name",
"score", "box": [x1, y1, x2, y2]}], "latency_ms"}``, the box in pixels of the image
sent; ``?conf=0.5&iou=0.5&max_det=10`` override the thresholds. With a canary
fraction above 0 and a ``@challenger`` that is not the champion, that fraction of
requests (drawn at random per request) goes to the challenger. ``GET /stats``: requests,
errors and latency per served version; ``GET /health``: which versions are loaded.
A bad request (empty body, not an image, over ``deployment.max_image_bytes`` or
``max_image_pixels``) gets a 4xx and a JSON ``{"error": ...}``; the service goes on.

The models are loaded once at start through ``mlflow.pyfunc.load_model`` (the same
packaged model any MLflow consumer gets), from the project's MLflow store
(``MLFLOW_TRACKING_URI`` when set). Standard library HTTP server, one thread per
connection; each model answers one request at a time.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

logger = logging.getLogger(__name__)

#: Latencies kept per version for the percentiles of ``/stats``.
LATENCY_WINDOW = 10_000


@dataclass
class ServedModel:
    """One registered model version, loaded, with its request counters."""

    alias: str
    name: str
    version: str
    model: Any  # mlflow.pyfunc.PyFuncModel
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def stats(self) -> dict[str, Any]:
        """This version's requests, errors and latency (mean, p50, p95, max in ms; None before any request)."""
        latencies = sorted(self.latencies_ms)

        def percentile(q: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None

        return {
            "alias": self.alias,
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms": {
                "mean": round(statistics.fmean(latencies), 2) if latencies else None,
                "p50": percentile(0.5),
                "p95": percentile(0.95),
                "max": round(latencies[-1], 2) if latencies else None,
            },
        }


class DetectionService:
    """Routes each image to the champion or (canary) the challenger and keeps the counts."""

    def __init__(
        self,
        champion: ServedModel,
        challenger: ServedModel | None = None,
        *,
        canary_fraction: float = 0.0,
        max_image_bytes: int = 20_000_000,
        seed: int | None = None,
    ) -> None:
        self.champion = champion
        self.challenger = challenger if challenger is not None and challenger.version != champion.version else None
        self.canary_fraction = canary_fraction if self.challenger is not None else 0.0
        self.max_image_bytes = max_image_bytes
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.refused = 0  # requests answered 4xx before reaching a model
        self.started = time.time()

    def pick(self) -> ServedModel:
        """The model for the next request: the challenger with probability ``canary_fraction``, else the champion."""
        if self.challenger is None or not self.canary_fraction:
            return self.champion
        with self._random_lock:
            draw = self._random.random()
        return self.challenger if draw < self.canary_fraction else self.champion

    def predict(self, body: bytes, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON payload) for one image."""
        import pandas as pd

        served = self.pick()
        started = time.perf_counter()
        status = 200
        payload: dict[str, Any] = {}
        try:
            with served.lock:
                frame = served.model.predict(pd.DataFrame({"image": [body]}), params=params or None)
            payload = {
                "detections": [
                    {
                        "class_id": int(row.class_id),
                        "class_name": row.class_name,
                        "score": round(float(row.score), 5),
                        "box": [round(float(v), 2) for v in (row.x1, row.y1, row.x2, row.y2)],
                    }
                    for row in frame.itertuples(index=False)
                ]
            }
        except Exception as exc:  # the packaged model's refusal of a bad image carries its 4xx
            status = getattr(exc, "http_status", None) or (400 if _is_invalid_input(exc) else 500)
            message = getattr(exc, "message", None) or str(exc)
            payload = {"error": message if status < 500 else f"prediction failed: {exc.__class__.__name__}: {message}"}
            if status >= 500:
                logger.exception("Prediction failed on version %s", served.version)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._stats_lock:
            served.requests += 1
            served.errors += status != 200
            served.latencies_ms.append(elapsed_ms)
        payload = {
            "model_name": served.name,
            "version": served.version,
            "alias": served.alias,
            **payload,
            "latency_ms": round(elapsed_ms, 2),
        }
        return status, payload

    def record_refusal(self) -> None:
        """A request refused before it reached a model (too large, no body) still counts as an error."""
        with self._stats_lock:
            self.refused += 1

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: uptime, canary fraction, requests refused before a model, and each version's counters."""
        with self._stats_lock:
            versions = {model.version: model.stats() for model in self._models()}
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "canary_fraction": self.canary_fraction,
                "refused_before_model": self.refused,
                "versions": versions,
            }

    def health(self) -> dict[str, Any]:
        """``GET /health``: the model name and the champion's and challenger's versions being served."""
        return {
            "status": "ok",
            "model_name": self.champion.name,
            "champion": self.champion.version,
            "challenger": self.challenger.version if self.challenger else None,
            "canary_fraction": self.canary_fraction,
        }

    def _models(self) -> list[ServedModel]:
        return [self.champion, *([self.challenger] if self.challenger else [])]


def _is_invalid_input(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


class _Handler(BaseHTTPRequestHandler):
    service: DetectionService  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    timeout = 60  # a client that stops sending mid-body frees its thread
    server_version = "cv_pipelines-serving"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/health":
            self._reply(200, self.service.health())
        elif path == "/stats":
            self._reply(200, self.service.stats())
        else:
            self._reply(404, {"error": f"no such endpoint {path}; use POST /predict, GET /stats or GET /health"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/predict":
            self._drain()
            self._reply(404, {"error": f"no such endpoint {url.path}; POST the image bytes to /predict"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or self.headers.get("Transfer-Encoding"):
            self.service.record_refusal()
            self._reply(411, {"error": "send the image as the body with a Content-Length header"}, close=True)
            return
        if length == 0:
            self.service.record_refusal()
            self._reply(400, {"error": "the request body is empty; send the image bytes as the body"})
            return
        if length > self.service.max_image_bytes:
            # Refused before reading: a huge upload must not fill memory. The connection
            # closes, since the unread body would otherwise be taken for the next request.
            self.service.record_refusal()
            self._reply(
                413,
                {"error": f"the image has {length} bytes, more than the limit of {self.service.max_image_bytes}"},
                close=True,
            )
            return
        body = self.rfile.read(length)
        try:
            params = _thresholds(parse_qs(url.query))
        except ValueError as exc:
            self.service.record_refusal()
            self._reply(400, {"error": str(exc)})
            return
        status, payload = self.service.predict(body, params)
        self._reply(status, payload)

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= self.service.max_image_bytes:
            self.rfile.read(length)
        elif length:
            self.close_connection = True

    def _reply(self, status: int, payload: dict[str, Any], close: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


_THRESHOLDS = {"conf": float, "iou": float, "max_det": int}


def _thresholds(query: dict[str, list[str]]) -> dict[str, Any]:
    params = {}
    for key, values in query.items():
        if key not in _THRESHOLDS:
            raise ValueError(f"unknown query parameter {key!r}; use conf, iou or max_det")
        try:
            params[key] = _THRESHOLDS[key](values[-1])
        except ValueError:
            raise ValueError(f"query parameter {key}={values[-1]!r} is not a number") from None
    return params


def make_server(service: DetectionService, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threading HTTP server bound to (host, port); port 0 picks a free one."""
    handler = type("DetectionHandler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def load_served_model(name: str, alias: str, *, use_onnx: bool | None = None) -> ServedModel | None:
    """``models:/<name>@<alias>`` loaded as a pyfunc, or None when the alias is not set."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    config = {} if use_onnx is None else {"use_onnx": use_onnx}
    # By version, not alias: the alias may move while this one is being served.
    model = mlflow.pyfunc.load_model(f"models:/{name}/{version.version}", model_config=config)
    return ServedModel(alias=alias, name=name, version=str(version.version), model=model)


def build_service(
    model_name: str,
    *,
    canary_fraction: float = 0.0,
    use_onnx: bool | None = None,
    max_image_bytes: int = 20_000_000,
    seed: int | None = None,
) -> DetectionService:
    """A service over ``@champion`` of ``model_name``, and ``@challenger`` when ``canary_fraction`` is above 0.

    Raises ``ConfigurationError`` when there is no champion. A missing challenger, or one
    that is the champion's version, only logs a warning: the champion serves everything.
    """
    from cv_pipelines.errors import ConfigurationError

    champion = load_served_model(model_name, "champion", use_onnx=use_onnx)
    if champion is None:
        raise ConfigurationError(
            f"registered model '{model_name}' has no @champion to serve; run `kedro run --pipelines deployment` "
            "(a model that passes the quality gate becomes champion)"
        )
    challenger = None
    if canary_fraction > 0:
        challenger = load_served_model(model_name, "challenger", use_onnx=use_onnx)
        if challenger is None or challenger.version == champion.version:
            logger.warning(
                "Canary fraction %s but no @challenger other than the champion; serving the champion only",
                canary_fraction,
            )
            challenger = None
    return DetectionService(
        champion, challenger, canary_fraction=canary_fraction, max_image_bytes=max_image_bytes, seed=seed
    )


def _project_deployment_params(env: str | None) -> dict[str, Any]:
    """``deployment.*`` as ``kedro run`` would see them (conf/base, then conf/<env>)."""
    from cv_pipelines.config.loader import section_parameters

    return section_parameters("deployment", env=env).model_dump()


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; command-line options override the ``deployment.*`` parameters.

    Prints one ``Serving ... on http://host:port`` line once the models are loaded and
    the port is bound; exits with one ``Error: ...`` line when the configuration is wrong.
    """
    parser = argparse.ArgumentParser(prog="python -m cv_pipelines.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="address to bind (deployment.host)")
    parser.add_argument("--port", type=int, help="port, 0 for any free one (deployment.port)")
    parser.add_argument("--model-name", help="registered model (deployment.model_name)")
    parser.add_argument(
        "--canary-fraction", type=float, help="share of requests for @challenger (deployment.canary_fraction)"
    )
    onnx = parser.add_mutually_exclusive_group()
    onnx.add_argument("--onnx", dest="use_onnx", action="store_true", default=None, help="infer through ONNX Runtime")
    onnx.add_argument("--torch", dest="use_onnx", action="store_false", help="infer through Ultralytics (PyTorch)")
    parser.add_argument("--seed", type=int, help="seed of the canary draw (reproducible splits)")
    parser.add_argument("--env", default=None, help="Kedro configuration environment (default: local)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from cv_pipelines.config.resolvers import _mlflow_tracking_uri
    from cv_pipelines.errors import ConfigurationError

    try:
        params = _project_deployment_params(args.env)
        fraction = params["canary_fraction"] if args.canary_fraction is None else args.canary_fraction
        if not 0 <= fraction <= 1:
            raise ConfigurationError(f"--canary-fraction must be between 0 and 1, got {fraction}")
        import mlflow

        mlflow.set_tracking_uri(_mlflow_tracking_uri())
        service = build_service(
            args.model_name or params["model_name"],
            canary_fraction=fraction,
            use_onnx=args.use_onnx if args.use_onnx is not None else params["use_onnx"],
            max_image_bytes=params["max_image_bytes"],
            seed=args.seed,
        )
        server = make_server(service, args.host or params["host"], params["port"] if args.port is None else args.port)
    except ConfigurationError as exc:
        raise SystemExit(f"Error: {exc.message}") from None
    host, port = server.socket.getsockname()[:2]  # what server_address holds, typed: port 0 became the one picked
    served = f"version {service.champion.version} (@champion)"
    if service.challenger:
        served += f" and version {service.challenger.version} (@challenger, {service.canary_fraction:.0%} of requests)"
    # One line a script (or a test) can wait for; flushed so a pipe sees it at once.
    print(f"Serving {service.champion.name} {served} on http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
