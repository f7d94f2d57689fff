"""The HTTP service's request and response bodies (pydantic): what ``/openapi.json`` and ``/docs`` describe."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Detection(BaseModel):
    """One box found on an image."""

    class_id: int = Field(description="the class's index in the model's names")
    class_name: str
    score: float = Field(ge=0, le=1)
    box: list[float] = Field(
        min_length=4, max_length=4, description="x1, y1, x2, y2 in pixels of the image sent, (x1, y1) top left"
    )


class Served(BaseModel):
    """Which registered model version answered, and in how long (the queue's wait included)."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    version: str
    alias: str = Field(description="champion, or challenger for a canary request")
    latency_ms: float


class PredictResponse(Served):
    """``POST /predict``: the detections of the one image sent."""

    detections: list[Detection]


class ImageResult(BaseModel):
    """The detections of one image of a batch."""

    detections: list[Detection]


class BatchResponse(Served):
    """``POST /predict/batch``: one result per image, in the order sent, all from one model version."""

    results: list[ImageResult]


class BatchRequest(BaseModel):
    """``POST /predict/batch``'s body: the images, each base64-encoded (JPEG, PNG, WebP, BMP or TIFF)."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(description="base64 of each image's encoded bytes")


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx: one sentence saying what was wrong; the version too when a model refused the image."""

    model_config = ConfigDict(protected_namespaces=())

    error: str
    model_name: str | None = None
    version: str | None = None
    alias: str | None = None
    latency_ms: float | None = None


class Health(BaseModel):
    """``GET /health``: the versions loaded."""

    model_config = ConfigDict(protected_namespaces=())

    status: str
    model_name: str
    champion: str
    challenger: str | None
    canary_fraction: float


class Latency(BaseModel):
    """Latency in ms over the last requests of a version; None before any."""

    mean: float | None
    p50: float | None
    p95: float | None
    max: float | None


class VersionStats(BaseModel):
    """One served version's counters: requests (a batch is one), errors, images, latency."""

    alias: str
    requests: int
    errors: int
    images: int
    latency_ms: Latency


class QueueStats(BaseModel):
    """The worker pool now: requests waiting for a worker, predictions running, and the limits."""

    waiting: int
    running: int
    workers: int
    max_queue: int


class Stats(BaseModel):
    """``GET /stats``: every request refused before a model (by status), the queue, each version's counters."""

    uptime_s: float
    canary_fraction: float
    refused_before_model: int
    refused_by_status: dict[str, int]
    queue: QueueStats
    versions: dict[str, VersionStats]
