"""The FastAPI application of a ``DetectionService``: routes, validation, bearer token, JSON errors, metrics.

Endpoints (``/docs`` and ``/openapi.json`` describe them):

- ``POST /predict``: the raw image bytes as the body (any content type, at most
  ``max_image_bytes``, refused from its ``Content-Length`` before it is read);
- ``POST /predict/batch``: ``{"images": ["<base64>", ...]}`` (``application/json``, at
  most ``max_batch_images`` images and ``max_batch_bytes`` bytes), one model version
  for the whole batch, all or nothing (a bad image refuses the batch, naming it);
- both take ``?conf=&iou=&max_det=`` (``conf`` and ``iou`` in [0, 1], ``max_det`` a
  whole number of at least 1; nan, inf and unknown or repeated parameters refused);
- ``GET /health`` (always open), ``GET /stats``, ``GET /metrics`` (Prometheus).

With a token, every endpoint but ``/health``, ``/docs`` and ``/openapi.json`` needs
``Authorization: Bearer <token>`` (else 401 with ``WWW-Authenticate``). Every error,
404 and 405 included, is ``{"error": "<one sentence>"}``.
"""

# No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run
# time, and those made inside ``create_app`` (its lazy imports) must be evaluated where defined.
import asyncio
import hmac
import json
import logging
import time
from typing import TYPE_CHECKING, Annotated, Any

from cv_pipelines.serving.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    Health,
    PredictResponse,
    Stats,
)
from cv_pipelines.serving.service import RequestRefused

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request

    from cv_pipelines.serving.metrics import ServingMetrics
    from cv_pipelines.serving.service import DetectionService, ServedModel

logger = logging.getLogger(__name__)

#: The query parameters of the predict endpoints, and what each must be.
THRESHOLDS = {
    "conf": "a number between 0 and 1",
    "iou": "a number between 0 and 1",
    "max_det": "a whole number of at least 1",
}
ROUTES = ("/predict", "/predict/batch", "/health", "/stats", "/metrics", "/docs", "/openapi.json")
#: The key of the request's ASGI scope where a handler says which model answered: (version, alias, images).
SERVED = "cv_serving.served"
BATCH_SHAPE = '{"images": ["<base64>", ...]}'


def _error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "a bad request: empty body, bad query parameter, not valid HTTP",
        401: "no bearer token, or not the right one (when the server has one)",
        411: "no Content-Length (nor chunked transfer encoding)",
        413: "the body, an image or a batch is larger than the limit",
        415: "not an image (or a batch that is not JSON)",
        503: "the queue is full: retry after Retry-After seconds",
    }
    return {status: {"model": ErrorResponse, "description": reasons[status]} for status in statuses}


class Accounting:
    """A pure ASGI middleware: every response counted in ``/stats`` and ``/metrics``, whichever answered it."""

    def __init__(self, app: Any, service: "DetectionService", metrics: "ServingMetrics") -> None:
        self.app = app
        self.service = service
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Pass the request on; record its status, latency and the version that answered it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope.get("path", "")
        endpoint = path if path in ROUTES else "other"
        answered: list[int] = []

        def count(status: int) -> None:
            # Counted as the answer starts, so whoever reads /stats after it sees it.
            answered.append(status)
            version, alias, images = scope.get(SERVED) or ("", "", 0)
            if status >= 400 and not version:
                self.service.record_refusal(status)
            self.metrics.count(endpoint, status, version, alias, images)

        async def send_and_count(message: dict) -> None:
            if message["type"] == "http.response.start":
                count(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            if not answered:  # an exception no handler turned into a response
                count(500)
            version, alias, _ = scope.get(SERVED) or ("", "", 0)
            self.metrics.time(endpoint, version, alias, time.perf_counter() - started)


def create_app(service: "DetectionService", *, token: str | None = None) -> "FastAPI":
    """The application serving ``service``; ``token``: the bearer token the guarded endpoints ask for."""
    from fastapi import Depends, FastAPI

    from cv_pipelines.serving.metrics import ServingMetrics

    app = FastAPI(
        title="cv_pipelines detection service",
        version="1",
        summary=f"Detections of {service.champion.name}'s @champion (and @challenger as a canary).",
        redoc_url=None,
    )
    metrics = ServingMetrics(service)
    app.state.metrics = metrics

    def refused_by_parser() -> None:
        """A request uvicorn's HTTP parser refused (400) before the application saw it."""
        service.record_refusal(400)
        metrics.count("invalid", 400, "", "")

    app.state.refused_by_parser = refused_by_parser
    guarded = [Depends(_token_check(token))] if token is not None else []
    _add_predict_routes(app, service, guarded)
    _add_report_routes(app, service, metrics, guarded)
    _add_error_handlers(app)
    app.openapi = _openapi_without_422(app)  # type: ignore[method-assign]
    app.add_middleware(Accounting, service=service, metrics=metrics)
    return app


def _token_check(token: str) -> Any:
    """The dependency that refuses (401) a request without ``token`` as its bearer token."""
    from fastapi import Depends
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    bearer = HTTPBearer(auto_error=False, description="the server's token, when it has one")

    async def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        realm = 'Bearer realm="cv_pipelines"'
        if credentials is None:
            raise RequestRefused(
                401,
                "this endpoint needs the server's bearer token: send 'Authorization: Bearer <token>'",
                {"WWW-Authenticate": realm},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise RequestRefused(
                401, "the bearer token is not the server's", {"WWW-Authenticate": f'{realm}, error="invalid_token"'}
            )

    return authorized


def _thresholds(conf: float | None, iou: float | None, max_det: int | None) -> dict[str, Any]:
    return {k: v for k, v in (("conf", conf), ("iou", iou), ("max_det", max_det)) if v is not None}


async def _read_body(request: "Request", limit: int, what: str) -> bytes:
    """The body, at most ``limit`` bytes (refused from its Content-Length before reading when larger)."""
    from starlette.requests import ClientDisconnect

    length = request.headers.get("content-length")
    if length is None and "chunked" not in request.headers.get("transfer-encoding", "").lower():
        raise RequestRefused(411, "send the image as the body with a Content-Length header")
    too_large = {"Connection": "close"}  # the unread body would be taken for the next request
    if length is not None and _whole(length) > limit:
        # Refused from the header, before the body is read: a huge upload never fills memory.
        raise RequestRefused(413, f"the {what} has {length} bytes, more than the limit of {limit}", too_large)
    chunks, size = [], 0
    try:
        async for chunk in request.stream():  # bounded even when chunked
            size += len(chunk)
            if size > limit:
                raise RequestRefused(413, f"the {what} has more than the limit of {limit} bytes", too_large)
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer; counted as a refusal, and no traceback in the log.
        raise RequestRefused(400, f"the client closed the connection before the whole {what} arrived") from None
    return b"".join(chunks)


def _add_predict_routes(app: "FastAPI", service: "DetectionService", guarded: list) -> None:
    """``POST /predict`` and ``POST /predict/batch``."""
    from fastapi import Depends, Query, Request
    from fastapi.responses import JSONResponse, Response
    from pydantic import ValidationError

    Conf = Annotated[float | None, Query(ge=0, le=1, allow_inf_nan=False, description="confidence threshold")]
    Iou = Annotated[float | None, Query(ge=0, le=1, allow_inf_nan=False, description="NMS IoU threshold")]
    MaxDet = Annotated[int | None, Query(ge=1, description="most detections per image")]

    def known_query(request: Request) -> None:
        """Refuse (400) a query parameter that is not a threshold, or one given twice."""
        for key in request.query_params:
            if key not in THRESHOLDS:
                raise RequestRefused(400, f"unknown query parameter {key!r}; use conf, iou or max_det")
            if len(request.query_params.getlist(key)) > 1:
                raise RequestRefused(400, f"query parameter {key} is given more than once")

    async def run(request: Request, served: "ServedModel", images: list[bytes], params: dict) -> tuple[int, dict]:
        future = service.submit(served, images, params)  # 503 at once when the queue is full
        request.scope[SERVED] = (served.version, served.alias, len(images))
        return await asyncio.wrap_future(future)

    @app.post(
        "/predict",
        summary="Detections on one image (the raw bytes as the body)",
        response_model=PredictResponse,
        responses=_error_responses(400, 401, 411, 413, 415, 503),
        dependencies=[*guarded, Depends(known_query)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "description": "the encoded image (JPEG, PNG, WebP, BMP, TIFF); any content type",
                "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            }
        },
    )
    async def predict(request: Request, conf: Conf = None, iou: Iou = None, max_det: MaxDet = None) -> Response:
        body = await _read_body(request, service.max_image_bytes, "image")
        if not body:
            raise RequestRefused(400, "the request body is empty; send the image bytes as the body")
        status, payload = await run(request, service.pick(), [body], _thresholds(conf, iou, max_det))
        if status == 200:
            latency = payload.pop("latency_ms")
            payload["detections"] = payload.pop("results")[0]["detections"]
            payload["latency_ms"] = latency
        return JSONResponse(payload, status)

    @app.post(
        "/predict/batch",
        summary="Detections on several images, base64 in JSON, from one model version",
        response_model=BatchResponse,
        responses=_error_responses(400, 401, 411, 413, 415, 503),
        dependencies=[*guarded, Depends(known_query)],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": BatchRequest.model_json_schema()}},
            }
        },
    )
    async def predict_batch(request: Request, conf: Conf = None, iou: Iou = None, max_det: MaxDet = None) -> Response:
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if kind != "application/json":
            raise RequestRefused(415, f"the batch is {kind}, not application/json; send {BATCH_SHAPE}")
        body = await _read_body(request, service.max_batch_bytes, "batch body")
        if not body:
            raise RequestRefused(400, f"the request body is empty; send {BATCH_SHAPE}")
        try:
            batch = BatchRequest.model_validate_json(body)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "the body"
            raise RequestRefused(400, f"the body is not {BATCH_SHAPE}: {where}: {first['msg']}") from None
        images = service.batch_images(batch.images)
        status, payload = await run(request, service.pick(), images, _thresholds(conf, iou, max_det))
        if status == 200:
            payload["latency_ms"] = payload.pop("latency_ms")
        return JSONResponse(payload, status)


def _add_report_routes(app: "FastAPI", service: "DetectionService", metrics: "ServingMetrics", guarded: list) -> None:
    """``GET /health``, ``GET /stats`` and ``GET /metrics``."""
    from fastapi.responses import JSONResponse, Response

    @app.get("/health", summary="The versions served (open even with a token)", response_model=Health)
    async def health() -> Response:
        return JSONResponse(service.health())

    @app.get(
        "/stats",
        summary="Requests, errors and latency per version; requests refused before a model",
        response_model=Stats,
        responses=_error_responses(401),
        dependencies=guarded,
    )
    async def stats() -> Response:
        return JSONResponse(service.stats())

    @app.get(
        "/metrics",
        summary="Prometheus metrics: requests, errors, latency by version and alias",
        response_class=Response,
        responses={**_error_responses(401), 200: {"content": {"text/plain": {}}}},
        dependencies=guarded,
    )
    async def prometheus() -> Response:
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)


def _add_error_handlers(app: "FastAPI") -> None:
    """Every error as ``{"error": "<one sentence>"}``, 404 and 405 included."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.exceptions import HTTPException

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused) -> Response:
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return JSONResponse({"error": _validation_sentence(exc.errors())}, 400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        path = request.url.path
        if exc.status_code == 404:
            message = f"no such endpoint {path}; use POST /predict, POST /predict/batch, GET /health, GET /stats or GET /metrics"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = (
                f"{request.method} is not allowed on {path}; use {' or '.join(allowed.split(', ')) or 'another method'}"
            )
        else:
            message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> Response:
        # Logged with its traceback by the server: a bug, never a client's mistake.
        return JSONResponse({"error": f"the server failed: {exc.__class__.__name__}"}, 500)


def _openapi_without_422(app: "FastAPI") -> Any:
    """The OpenAPI builder of ``app``, with the 400 this service answers instead of FastAPI's 422."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        """The OpenAPI document, with the 400 this service answers instead of FastAPI's 422."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    return openapi


def _whole(length: str) -> int:
    """A Content-Length uvicorn's parser let through (digits); anything else is refused as not valid HTTP."""
    if not length.strip().isdigit():
        raise RequestRefused(400, f"Content-Length {length!r} is not a whole number of bytes")
    return int(length)


def _validation_sentence(errors: Any) -> str:
    """One sentence for FastAPI's validation errors: each parameter, what it was and what it must be."""
    parts = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if len(loc) == 2 and loc[0] == "query" and loc[1] in THRESHOLDS:
            parts.append(f"query parameter {loc[1]}={error.get('input')!r} is not {THRESHOLDS[loc[1]]}")
        else:
            parts.append(f"{'.'.join(str(part) for part in loc)}: {error.get('msg')}")
    return "; ".join(dict.fromkeys(parts))
