"""An HTTP detection service over the model registry's ``@champion`` (and ``@challenger``).

    python -m cv_pipelines.serving                      # deployment.* from conf/base (+ conf/local)
    python -m cv_pipelines.serving --port 8080 --canary-fraction 0.1 --workers 2

``POST /predict`` with the raw image bytes as the body (any content type) answers
``{"model_name", "version", "alias", "detections": [{"class_id", "class_name",
"score", "box": [x1, y1, x2, y2]}], "latency_ms"}``, the box in pixels of the image
sent; ``?conf=0.5&iou=0.5&max_det=10`` override the thresholds (``conf`` and ``iou``
in [0, 1], ``max_det`` a whole number of at least 1; any other query parameter is
refused). ``POST /predict/batch`` takes ``{"images": ["<base64>", ...]}`` and answers
one ``{"detections": [...]}`` per image in ``results``, all from one model version.
With a canary fraction above 0 and a ``@challenger`` that is not the champion, that
fraction of requests (drawn at random per request) goes to the challenger.
``GET /stats``: requests, errors and latency per served version, and every request
refused before a model; ``GET /health``: which versions are loaded; ``GET /metrics``:
Prometheus counters and latency histograms by version and alias; ``GET /docs``: the
OpenAPI documentation (``/openapi.json``). Every error is a JSON ``{"error": ...}``
with its 4xx or 5xx; the service goes on.

The models are loaded at start through ``mlflow.pyfunc.load_model`` (the same packaged
model any MLflow consumer gets), from the environment's MLflow store (``MLFLOW_TRACKING_URI``
when set, else its ``mlflow_server`` global), ``deployment.serving.workers`` copies of each: a copy answers one request at
a time (the packaged model is not assumed thread-safe). Requests wait for a copy in a
queue of ``deployment.serving.max_queue``; past it they are answered 503 with
``Retry-After`` at once. The HTTP layer is FastAPI on uvicorn (``serving.app``,
``serving.server``), the stack of MLflow's own scoring server.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import logging
import os
import queue
import random
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: Latencies kept per version for the percentiles of ``/stats``.
LATENCY_WINDOW = 10_000
#: The environment variable holding the bearer token; it wins over credentials.yml's ``serving.token``.
TOKEN_ENV = "CV_SERVING_TOKEN"


@dataclass
class ServedModel:
    """One registered model version, loaded ``len(copies)`` times, with its request counters.

    Each copy answers one prediction at a time: ``borrow`` hands out a free one.
    """

    alias: str
    name: str
    version: str
    copies: list[Any]  # mlflow.pyfunc.PyFuncModel, one per worker
    requests: int = 0
    errors: int = 0
    images: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def __post_init__(self) -> None:
        self._free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for copy in self.copies:
            self._free.put(copy)

    @property
    def model(self) -> Any:
        """The first copy (any copy predicts alike)."""
        return self.copies[0]

    @contextmanager
    def borrow(self) -> Iterator[Any]:
        """A copy no other thread is using, for the duration of the block."""
        model = self._free.get()
        try:
            yield model
        finally:
            self._free.put(model)

    def stats(self) -> dict[str, Any]:
        """This version's requests, errors and latency (mean, p50, p95, max in ms; None before any request)."""
        latencies = sorted(self.latencies_ms)

        def percentile(q: float) -> float | None:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None

        return {
            "alias": self.alias,
            "requests": self.requests,
            "errors": self.errors,
            "images": self.images,
            "latency_ms": {
                "mean": round(statistics.fmean(latencies), 2) if latencies else None,
                "p50": percentile(0.5),
                "p95": percentile(0.95),
                "max": round(latencies[-1], 2) if latencies else None,
            },
        }


class RequestRefused(Exception):
    """A request answered with a 4xx or 5xx before (or instead of) a prediction: its status and sentence."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class DetectionService:
    """Routes each request to the champion or (canary) the challenger, bounds the queue and keeps the counts.

    Predictions run in a pool of ``workers`` threads; at most ``workers + max_queue``
    requests are admitted at once (``submit``), the rest are refused with a 503.
    """

    def __init__(
        self,
        champion: ServedModel,
        challenger: ServedModel | None = None,
        *,
        canary_fraction: float = 0.0,
        max_image_bytes: int = 20_000_000,
        workers: int = 1,
        max_queue: int = 16,
        retry_after_s: int = 1,
        max_batch_images: int = 16,
        max_batch_bytes: int = 50_000_000,
        seed: int | None = None,
    ) -> None:
        self.champion = champion
        self.challenger = challenger if challenger is not None and challenger.version != champion.version else None
        self.canary_fraction = canary_fraction if self.challenger is not None else 0.0
        self.max_image_bytes = max_image_bytes
        self.workers = workers
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.max_batch_images = max_batch_images
        self.max_batch_bytes = max_batch_bytes
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._admission = threading.Lock()
        self._admitted = 0  # waiting + running
        self._running = 0
        self._executor: ThreadPoolExecutor | None = None
        self.refused = 0  # requests answered 4xx/5xx before reaching a model
        self.refused_by_status: Counter[int] = Counter()
        self.started = time.time()

    # --- routing and prediction ----------------------------------------------------------

    def pick(self) -> ServedModel:
        """The model for the next request: the challenger with probability ``canary_fraction``, else the champion."""
        if self.challenger is None or not self.canary_fraction:
            return self.champion
        with self._random_lock:
            draw = self._random.random()
        return self.challenger if draw < self.canary_fraction else self.champion

    def submit(self, served: ServedModel, images: list[bytes], params: dict[str, Any]) -> Future[tuple[int, dict]]:
        """Queue a prediction of ``images`` by ``served``; a future of ``(HTTP status, payload)``.

        Raises ``RequestRefused`` (503, ``Retry-After``) at once when ``max_queue``
        requests already wait for a worker: a bounded queue, never an unbounded one.
        """
        with self._admission:
            if self._admitted >= self.workers + self.max_queue:
                full = True
            else:
                full = False
                self._admitted += 1
        if full:
            raise RequestRefused(
                503,
                f"the server is busy: {self.max_queue} requests already wait for a worker; "
                f"retry in {self.retry_after_s} s",
                {"Retry-After": str(self.retry_after_s)},
            )
        try:
            return self._pool().submit(self._run, served, images, params)
        except BaseException:
            self._leave(running=False)
            raise

    def _pool(self) -> ThreadPoolExecutor:
        with self._admission:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="cv-serving-worker")
            return self._executor

    def _leave(self, running: bool) -> None:
        with self._admission:
            self._admitted -= 1
            self._running -= running

    def _run(self, served: ServedModel, images: list[bytes], params: dict[str, Any]) -> tuple[int, dict]:
        with self._admission:
            self._running += 1
        try:
            return self.predict_many(served, images, params)
        finally:
            self._leave(running=True)

    def predict_many(
        self, served: ServedModel, images: list[bytes], params: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON payload) for ``images`` predicted by ``served`` in one call.

        The payload names the version and alias; on success ``results`` holds one
        ``{"detections": [...]}`` per image, otherwise ``error`` says why (the packaged
        model's refusal of a bad image carries its 4xx, naming the image in a batch).
        """
        import pandas as pd

        started = time.perf_counter()
        status = 200
        payload: dict[str, Any] = {}
        try:
            with served.borrow() as model:
                frame = model.predict(pd.DataFrame({"image": images}), params=params or None)
            results: list[dict[str, list]] = [{"detections": []} for _ in images]
            for row in frame.itertuples(index=False):
                results[int(row.image_index)]["detections"].append(
                    {
                        "class_id": int(row.class_id),
                        "class_name": row.class_name,
                        "score": round(float(row.score), 5),
                        "box": [round(float(v), 2) for v in (row.x1, row.y1, row.x2, row.y2)],
                    }
                )
            payload = {"results": results}
        except Exception as exc:
            status = getattr(exc, "http_status", None) or (400 if _is_invalid_input(exc) else 500)
            message = getattr(exc, "message", None) or str(exc)
            payload = {"error": message if status < 500 else f"prediction failed: {exc.__class__.__name__}: {message}"}
            if status >= 500:
                logger.exception("Prediction failed on version %s", served.version)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with self._stats_lock:
            served.requests += 1
            served.errors += status != 200
            served.images += len(images)
            served.latencies_ms.append(elapsed_ms)
        payload = {
            "model_name": served.name,
            "version": served.version,
            "alias": served.alias,
            **payload,
            "latency_ms": round(elapsed_ms, 2),
        }
        return status, payload

    # --- request checks ------------------------------------------------------------------

    def batch_images(self, images: list[str]) -> list[bytes]:
        """The decoded images of a batch request; ``RequestRefused`` (400) names the first that is not base64."""
        if not images:
            raise RequestRefused(400, 'the batch holds no image; send {"images": ["<base64>", ...]}')
        if len(images) > self.max_batch_images:
            raise RequestRefused(
                413, f"the batch holds {len(images)} images, more than the limit of {self.max_batch_images}"
            )
        decoded = []
        for index, text in enumerate(images):
            try:
                decoded.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise RequestRefused(400, f"images[{index}] is not base64 text") from None
        return decoded

    def record_refusal(self, status: int = 400) -> None:
        """A request answered 4xx/5xx before it reached a model (too large, no body, busy) still counts."""
        with self._stats_lock:
            self.refused += 1
            self.refused_by_status[status] += 1

    # --- what the service reports --------------------------------------------------------

    @property
    def queue_depth(self) -> tuple[int, int]:
        """(requests waiting for a worker, predictions running)."""
        with self._admission:
            return self._admitted - self._running, self._running

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: uptime, canary fraction, requests refused before a model, the queue, each version's counters."""
        waiting, running = self.queue_depth
        with self._stats_lock:
            versions = {model.version: model.stats() for model in self._models()}
            return {
                "uptime_s": round(time.time() - self.started, 1),
                "canary_fraction": self.canary_fraction,
                "refused_before_model": self.refused,
                "refused_by_status": {str(status): n for status, n in sorted(self.refused_by_status.items())},
                "queue": {"waiting": waiting, "running": running, "workers": self.workers, "max_queue": self.max_queue},
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

    def models(self) -> list[ServedModel]:
        """The versions served: the champion, then the challenger if any."""
        return self._models()

    def close(self) -> None:
        """Let the predictions running finish, then stop the worker threads (a later request starts new ones)."""
        with self._admission:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _models(self) -> list[ServedModel]:
        return [self.champion, *([self.challenger] if self.challenger else [])]


def _is_invalid_input(exc: Exception) -> bool:
    return getattr(exc, "error_code", "") in ("INVALID_PARAMETER_VALUE", "BAD_REQUEST")


def load_served_model(name: str, alias: str, *, use_onnx: bool | None = None, copies: int = 1) -> ServedModel | None:
    """``models:/<name>@<alias>`` loaded ``copies`` times as a pyfunc, or None when the alias is not set."""
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        version = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    config = {} if use_onnx is None else {"use_onnx": use_onnx}
    # By version, not alias: the alias may move while this one is being served. The
    # artifacts are fetched once; each copy is loaded from them.
    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version.version}")
    models = [mlflow.pyfunc.load_model(local, model_config=config) for _ in range(copies)]
    return ServedModel(alias=alias, name=name, version=str(version.version), copies=models)


def build_service(
    model_name: str,
    *,
    canary_fraction: float = 0.0,
    use_onnx: bool | None = None,
    max_image_bytes: int = 20_000_000,
    seed: int | None = None,
    **serving: Any,
) -> DetectionService:
    """A service over ``@champion`` of ``model_name``, and ``@challenger`` when ``canary_fraction`` is above 0.

    ``serving``: ``DetectionService``'s pool, queue and batch settings (``workers``,
    ``max_queue``, ``retry_after_s``, ``max_batch_images``, ``max_batch_bytes``).
    Raises ``ConfigurationError`` when there is no champion. A missing challenger, or one
    that is the champion's version, only logs a warning: the champion serves everything.
    """
    from cv_pipelines.errors import ConfigurationError

    copies = int(serving.get("workers", 1))
    champion = load_served_model(model_name, "champion", use_onnx=use_onnx, copies=copies)
    if champion is None:
        raise ConfigurationError(
            f"registered model '{model_name}' has no @champion to serve; run `kedro run --pipelines deployment` "
            "(a model that passes the quality gate becomes champion)"
        )
    challenger = None
    if canary_fraction > 0:
        challenger = load_served_model(model_name, "challenger", use_onnx=use_onnx, copies=copies)
        if challenger is None or challenger.version == champion.version:
            logger.warning(
                "Canary fraction %s but no @challenger other than the champion; serving the champion only",
                canary_fraction,
            )
            challenger = None
    return DetectionService(
        champion, challenger, canary_fraction=canary_fraction, max_image_bytes=max_image_bytes, seed=seed, **serving
    )


def make_server(service: DetectionService, host: str = "127.0.0.1", port: int = 0, **options: Any) -> Any:
    """The service's HTTP server bound to (host, port) (port 0: a free one); see ``serving.server.Server``."""
    from cv_pipelines.serving.server import Server

    return Server(service, host, port, **options)


def _project_deployment_params(env: str | None) -> dict[str, Any]:
    """``deployment.*`` as ``kedro run`` would see them (conf/base, then conf/<env>)."""
    from cv_pipelines.config.loader import section_parameters

    return section_parameters("deployment", env=env).model_dump()


def serving_token(env: str | None, environ: dict[str, str] | None = None) -> str | None:
    """The bearer token: ``CV_SERVING_TOKEN``, else credentials.yml's ``serving.token``; None when neither is set."""
    from cv_pipelines.config.loader import project_credentials
    from cv_pipelines.errors import ConfigurationError

    environ = dict(os.environ) if environ is None else environ
    token = environ.get(TOKEN_ENV)
    if token is None:
        entry = project_credentials(env).get("serving") or {}
        token = entry.get("token") if isinstance(entry, dict) else None
    if token is None:
        return None
    token = str(token)
    if not token.strip() or any(ch.isspace() for ch in token) or not token.isprintable():
        raise ConfigurationError(
            f"the serving token (from {TOKEN_ENV} or credentials.yml's 'serving.token') is empty or holds "
            "spaces or control characters; use a long random string without them"
        )
    return token


def check_bind(host: str, port: int, token: str | None) -> None:
    """Refuse, before anything is bound, a port out of range or a non-loopback address without a token."""
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.serving.server import is_loopback

    if not 0 <= port <= 65535:
        raise ConfigurationError(f"--port must be between 0 and 65535 (0: any free port), got {port}")
    if token is None and not is_loopback(host):
        raise ConfigurationError(
            f"serving on {host}, an address other than loopback, needs a bearer token: set {TOKEN_ENV} or "
            "a 'serving' entry with a 'token' in conf/local/credentials.yml (or serve on 127.0.0.1)"
        )


def _parser() -> argparse.ArgumentParser:
    """The serving command's options; each overrides its ``deployment.*`` parameter."""
    parser = argparse.ArgumentParser(prog="python -m cv_pipelines.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", help="address to bind (deployment.host); not loopback: a token is required")
    parser.add_argument("--port", type=int, help="port, 0 for any free one (deployment.port)")
    parser.add_argument("--model-name", help="registered model (deployment.model_name)")
    parser.add_argument(
        "--canary-fraction", type=float, help="share of requests for @challenger (deployment.canary_fraction)"
    )
    onnx = parser.add_mutually_exclusive_group()
    onnx.add_argument("--onnx", dest="use_onnx", action="store_true", default=None, help="infer through ONNX Runtime")
    onnx.add_argument("--torch", dest="use_onnx", action="store_false", help="infer through Ultralytics (PyTorch)")
    parser.add_argument(
        "--workers", type=int, help="copies of each model predicting at once (deployment.serving.workers)"
    )
    parser.add_argument("--max-queue", type=int, help="requests waiting before a 503 (deployment.serving.max_queue)")
    parser.add_argument("--seed", type=int, help="seed of the canary draw (reproducible splits)")
    parser.add_argument("--env", default=None, help="Kedro configuration environment (default: local)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; command-line options override the ``deployment.*`` parameters.

    Prints one ``Serving ... on http://host:port`` line once the models are loaded and
    the port is bound; exits with one ``Error: ...`` line when the configuration is wrong
    or the port cannot be bound. SIGTERM / SIGINT let the requests in flight finish
    (``deployment.serving.graceful_timeout_s`` at most), then exit 0.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from cv_pipelines.config.loader import project_tracking_uri
    from cv_pipelines.errors import ConfigurationError

    server = None
    try:
        params = _project_deployment_params(args.env)
        serving = dict(params["serving"])
        fraction = params["canary_fraction"] if args.canary_fraction is None else args.canary_fraction
        if not 0 <= fraction <= 1:
            raise ConfigurationError(f"--canary-fraction must be between 0 and 1, got {fraction}")
        for option, key, least in (("--workers", "workers", 1), ("--max-queue", "max_queue", 0)):
            value = getattr(args, key)
            if value is not None:
                if value < least:
                    raise ConfigurationError(f"{option} must be at least {least}, got {value}")
                serving[key] = value
        host = args.host or params["host"]
        port = params["port"] if args.port is None else args.port
        token = serving_token(args.env)
        check_bind(host, port, token)
        from cv_pipelines.serving.server import bind_socket

        # Bound before the models load: a port in use is said in a second, not after the load.
        sock = bind_socket(host, port, serving["backlog"])
        try:
            import mlflow

            mlflow.set_tracking_uri(project_tracking_uri(args.env))
            service = build_service(
                args.model_name or params["model_name"],
                canary_fraction=fraction,
                use_onnx=args.use_onnx if args.use_onnx is not None else params["use_onnx"],
                max_image_bytes=params["max_image_bytes"],
                seed=args.seed,
                **_service_options(serving),
            )
            server = make_server(
                service,
                token=token,
                sock=sock,
                backlog=serving["backlog"],
                graceful_timeout_s=serving["graceful_timeout_s"],
            )
        except BaseException:
            sock.close()
            raise
    except ConfigurationError as exc:
        raise SystemExit(f"Error: {exc.message}") from None
    host, port = server.server_address[:2]  # port 0 became the one picked
    served = f"version {service.champion.version} (@champion)"
    if service.challenger:
        served += f" and version {service.challenger.version} (@challenger, {service.canary_fraction:.0%} of requests)"
    guarded = ", bearer token required" if token else ""
    # One line a script (or a test) can wait for; flushed so a pipe sees it at once.
    print(f"Serving {service.champion.name} {served} on http://{_url_host(host)}:{port}{guarded}", flush=True)
    try:
        server.serve_forever()  # returns once SIGTERM / SIGINT has let the requests in flight finish
    finally:
        server.server_close()


def _service_options(serving: dict[str, Any]) -> dict[str, Any]:
    keys = ("workers", "max_queue", "retry_after_s", "max_batch_images", "max_batch_bytes")
    return {key: serving[key] for key in keys}


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    main()
