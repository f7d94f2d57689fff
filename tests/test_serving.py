"""The HTTP service (``python -m cv_pipelines.serving``): FastAPI on uvicorn, on 127.0.0.1, a real HTTP client.

The models are those of the "L first" project (``deployed_project``: champion v1, challenger
v2), loaded once for the module; one server (30% canary, a bearer token, two workers)
answers most tests in a thread of this process. A second one over a slowed copy of the
champion (one worker, a queue of one) shows the backpressure. A real process is started
only where the process is what is tested: the command's start-up line and its graceful
stop on SIGTERM, and ``mlflow models serve``.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, project_env
from tests.support.images import png_with_declared_size
from tests.support.mlflow_store import STORE
from tests.support.projects import MODEL, use_project
from tests.test_deployment import LABELS, _jpeg

TOKEN = "test-token-0123456789"


class Client:
    """One request per connection, JSON answers decoded; the bearer token sent unless ``token`` says otherwise."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token

    def exchange(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                 token: str | None = "default"):
        """(status, headers, raw body)."""
        headers = dict(headers or {})
        token = self.token if token == "default" else token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response, response.read()
        finally:
            connection.close()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                token: str | None = "default"):
        """(status, the JSON answer)."""
        status, response, data = self.exchange(method, path, body, headers, token)
        assert response.getheader("Content-Type", "").startswith("application/json"), (status, data[:200])
        return status, json.loads(data)


def raw_exchange(port: int, data: bytes) -> bytes:
    """Send ``data`` as it is on a fresh connection; everything the server sends back until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def split_response(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_project(deployed_copy):
    """The "L first" project as the current project for the whole module."""
    import mlflow

    with pytest.MonkeyPatch.context() as monkeypatch:
        root = use_project(deployed_copy, monkeypatch)
        monkeypatch.delenv("CV_SERVING_TOKEN", raising=False)
        mlflow.set_tracking_uri(f"sqlite:///{root / STORE}")
        yield root


@pytest.fixture(scope="module")
def loaded(served_project):
    """Champion v1 and challenger v2, two copies each, loaded once for the module."""
    from cv_pipelines.serving.service import load_served_model

    return (load_served_model(MODEL, "champion", copies=2), load_served_model(MODEL, "challenger", copies=2))


@pytest.fixture(scope="module")
def server(loaded):
    """The service on 127.0.0.1, an ephemeral port, 30% canary, a bearer token, two workers, in a thread."""
    from cv_pipelines.serving.service import DetectionService, make_server

    service = DetectionService(*loaded, canary_fraction=0.3, seed=1234, workers=2, max_queue=16, max_batch_images=4)
    with make_server(service, token=TOKEN).running() as running:
        yield service, Client(running.port, TOKEN)


class SlowModel:
    """A loaded pyfunc model whose predictions take ``seconds`` longer."""

    def __init__(self, model, seconds: float) -> None:
        self.model, self.seconds = model, seconds

    def predict(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.model.predict(*args, **kwargs)


@pytest.fixture(scope="module")
def slow_server(loaded):
    """The champion slowed to 0.8 s a prediction, one worker, one request allowed to wait; no token."""
    from cv_pipelines.serving.service import DetectionService, ServedModel, make_server

    champion = loaded[0]
    slow = ServedModel(alias="champion", name=champion.name, version=champion.version,
                       copies=[SlowModel(champion.model, 0.8)])
    service = DetectionService(slow, workers=1, max_queue=1, retry_after_s=2)
    with make_server(service).running() as running:
        yield service, Client(running.port)


# --- answers ------------------------------------------------------------------------------


def test_the_service_answers_with_detections_and_the_version_that_served(server):
    _, client = server
    status, health = client.request("GET", "/health", token=None)  # open even with a token
    assert status == 200 and health["champion"] == "1" and health["challenger"] == "2"

    status, answer = client.request("POST", "/predict?conf=0.0001&max_det=3", _jpeg(120, 80))
    assert status == 200
    assert list(answer) == ["model_name", "version", "alias", "detections", "latency_ms"]
    assert (answer["version"], answer["alias"]) in {("1", "champion"), ("2", "challenger")}
    assert 0 < len(answer["detections"]) <= 3
    for detection in answer["detections"]:
        assert set(detection) == {"class_id", "class_name", "score", "box"}
        assert detection["class_name"] in LABELS
        x1, y1, x2, y2 = detection["box"]
        assert 0 <= x1 <= x2 <= 120 and 0 <= y1 <= y2 <= 80
    # The bounds themselves are thresholds too.
    assert client.request("POST", "/predict?conf=1&iou=0&max_det=1", _jpeg(40, 40)) [0] == 200
    status, answer = client.request("POST", "/predict?conf=0", _jpeg(40, 40), token=TOKEN)
    assert status == 200 and len(answer["detections"]) <= 300


def test_the_batch_endpoint_answers_each_image_from_one_version(server):
    _, client = server
    sizes = [(120, 80), (64, 64), (50, 90)]
    body = {"images": [base64.b64encode(_jpeg(w, h, seed=i)).decode() for i, (w, h) in enumerate(sizes)]}
    json_headers = {"Content-Type": "application/json"}
    status, answer = client.request("POST", "/predict/batch?conf=0.0001&max_det=2", json.dumps(body).encode(),
                                    json_headers)
    assert status == 200, answer
    assert list(answer) == ["model_name", "version", "alias", "results", "latency_ms"]
    assert answer["version"] in {"1", "2"} and len(answer["results"]) == 3
    for (width, height), result in zip(sizes, answer["results"], strict=True):
        assert 0 < len(result["detections"]) <= 2
        for detection in result["detections"]:
            x1, y1, x2, y2 = detection["box"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height

    def refused(payload, headers=json_headers):
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return client.request("POST", "/predict/batch", data, headers)

    good = base64.b64encode(_jpeg(32, 32)).decode()
    assert refused({"images": [good, "not base64!"]}) == (400, {"error": "images[1] is not base64 text"})
    assert refused({"images": []}) == (400, {"error": 'the batch holds no image; send {"images": ["<base64>", ...]}'})
    assert refused({"images": [good] * 5}) == (413, {"error": "the batch holds 5 images, more than the limit of 4"})
    status, answer = refused({"pictures": [good]})
    assert status == 400 and answer["error"].startswith('the body is not {"images": ["<base64>", ...]}')
    status, answer = refused(b"{not json")
    assert status == 400 and answer["error"].startswith("the body is not")
    status, answer = refused({"images": [good]}, {"Content-Type": "image/jpeg"})
    assert status == 415 and "not application/json" in answer["error"]
    # All or nothing: one image that is not one refuses the batch, naming it.
    status, answer = refused({"images": [good, base64.b64encode(b"GIF89a, not really").decode()]})
    assert status == 415 and answer["error"].startswith("image 1: ") and "not an image" in answer["error"]


def test_the_canary_sends_its_fraction_of_requests_to_the_challenger(server):
    _, client = server
    before = client.request("GET", "/stats")[1]["versions"]
    image = _jpeg(32, 32)
    requests = 200
    served = [client.request("POST", "/predict", image)[1]["version"] for _ in range(requests)]
    to_challenger = served.count("2")
    expected, spread = requests * 0.3, math.sqrt(requests * 0.3 * 0.7)
    assert abs(to_challenger - expected) <= 4 * spread, to_challenger  # 4 standard deviations of a binomial
    after = client.request("GET", "/stats")[1]["versions"]
    assert after["2"]["requests"] - before["2"]["requests"] == to_challenger
    assert after["1"]["requests"] - before["1"]["requests"] == requests - to_challenger
    assert after["2"]["alias"] == "challenger" and after["1"]["latency_ms"]["p50"] > 0


# --- refusals -----------------------------------------------------------------------------


def test_bad_requests_get_a_json_error_with_a_reason_and_the_service_keeps_serving(server, caplog):
    service, client = server
    before = client.request("GET", "/stats")[1]
    assert client.request("POST", "/predict", b"") == (400, {"error": "the request body is empty; send the image bytes as the body"})
    status, answer = client.request("POST", "/predict", b"this is not an image at all")
    assert status == 415 and "not an image" in answer["error"] and answer["version"] in {"1", "2"}
    status, answer = client.request("POST", "/predict", png_with_declared_size(20_000, 20_000))
    assert status == 413 and "pixels than the limit of 40000000" in answer["error"]
    status, answer = client.request("GET", "/nowhere")
    assert status == 404 and answer["error"].startswith("no such endpoint /nowhere; use POST /predict")
    assert client.request("POST", "/nowhere", b"x")[0] == 404
    for method in ("PUT", "DELETE"):
        status, answer = client.request(method, "/predict", b"x")
        assert (status, answer) == (405, {"error": f"{method} is not allowed on /predict; use POST"})
    status, answer = client.request("POST", "/health")
    assert (status, answer) == (405, {"error": "POST is not allowed on /health; use GET"})

    # Over the byte limit: refused from the header, before the body is read, and the connection closed.
    connection = http.client.HTTPConnection("127.0.0.1", client.port, timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Length", str(service.max_image_bytes + 1))
    connection.putheader("Authorization", f"Bearer {TOKEN}")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413 and response.getheader("Connection") == "close"
    assert json.loads(response.read()) == {"error": "the image has 20000001 bytes, more than the limit of 20000000"}
    connection.close()

    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    # No Content-Length (nor chunked): 411.
    status, headers, body = split_response(raw_exchange(
        client.port, b"POST /predict HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n\r\n"))
    assert status == 411 and json.loads(body) == {"error": "send the image as the body with a Content-Length header"}
    # A Content-Length that is not a number: refused by uvicorn's parser, still a JSON 400 and no traceback.
    caplog.clear()
    for length in (b"abc", b"-1"):
        status, headers, body = split_response(raw_exchange(
            client.port, b"POST /predict HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: " + length + b"\r\n\r\nhello"))
        assert status == 400 and headers["content-type"] == "application/json" and headers["connection"] == "close"
        assert json.loads(body)["error"].startswith("the request is not valid HTTP/1.1 (")
    assert "Traceback" not in caplog.text and not any(record.exc_info for record in caplog.records)
    # A chunked body is read, and bounded the same way.
    image = _jpeg(40, 40)
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(image), image)
    status, _, body = split_response(raw_exchange(
        client.port, b"POST /predict HTTP/1.1\r\nHost: x\r\n" + auth
        + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunked))
    assert status == 200 and json.loads(body)["version"] in {"1", "2"}

    assert client.request("GET", "/health")[0] == 200
    assert client.request("POST", "/predict", _jpeg(48, 48))[0] == 200
    after = client.request("GET", "/stats")[1]
    # Refused before a model: empty, 2 x 404, 3 x 405, too many bytes, no length, 2 x bad length.
    assert after["refused_before_model"] - before["refused_before_model"] == 10
    delta = {s: n - before["refused_by_status"].get(s, 0) for s, n in after["refused_by_status"].items()}
    assert {s: n for s, n in delta.items() if n} == {"400": 3, "404": 2, "405": 3, "411": 1, "413": 1}
    errors = sum(v["errors"] for v in after["versions"].values()) - sum(v["errors"] for v in before["versions"].values())
    assert errors == 2  # not an image, too many pixels: the model refused them

    # A client gone mid-upload: counted, and no traceback either.
    with socket.create_connection(("127.0.0.1", client.port), timeout=30) as gone:
        gone.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 1000\r\n\r\n" + image[:10])
    deadline = time.monotonic() + 10
    while service.refused == after["refused_before_model"]:
        assert time.monotonic() < deadline, "the abandoned upload was never counted"
        time.sleep(0.05)
    assert "Traceback" not in caplog.text and not any(record.exc_info for record in caplog.records), caplog.text
    assert client.request("POST", "/predict", _jpeg(48, 48))[0] == 200


@pytest.mark.parametrize(("query", "sentence"), [
    ("conf=-1", "query parameter conf='-1' is not a number between 0 and 1"),
    ("conf=1.5", "query parameter conf='1.5' is not a number between 0 and 1"),
    ("conf=nan", "query parameter conf='nan' is not a number between 0 and 1"),
    ("conf=high", "query parameter conf='high' is not a number between 0 and 1"),
    ("iou=inf", "query parameter iou='inf' is not a number between 0 and 1"),
    ("iou=-inf", "query parameter iou='-inf' is not a number between 0 and 1"),
    ("max_det=0", "query parameter max_det='0' is not a whole number of at least 1"),
    ("max_det=-1", "query parameter max_det='-1' is not a whole number of at least 1"),
    ("max_det=1.5", "query parameter max_det='1.5' is not a whole number of at least 1"),
    ("confidence=0.5", "unknown query parameter 'confidence'; use conf, iou or max_det"),
    ("conf=0.5&conf=0.6", "query parameter conf is given more than once"),
])
def test_thresholds_out_of_range_are_refused_with_one_sentence(server, query, sentence):
    service, client = server
    refused = service.refused
    for path in ("/predict", "/predict/batch"):
        body = _jpeg(32, 32) if path == "/predict" else json.dumps({"images": []}).encode()
        assert client.request("POST", f"{path}?{query}", body, {"Content-Type": "application/json"}) == (
            400, {"error": sentence})
    assert service.refused == refused + 2


def test_the_bearer_token_guards_everything_but_health(server):
    _, client = server
    for method, path, body in (("POST", "/predict", _jpeg(32, 32)), ("POST", "/predict/batch", b"{}"),
                               ("GET", "/stats", None), ("GET", "/metrics", None)):
        status, response, data = client.exchange(method, path, body, token=None)
        assert status == 401 and response.getheader("WWW-Authenticate") == 'Bearer realm="cv_pipelines"'
        assert json.loads(data) == {"error": "this endpoint needs the server's bearer token: send 'Authorization: Bearer <token>'"}
        status, response, data = client.exchange(method, path, body, token=TOKEN + "x")
        assert status == 401 and 'error="invalid_token"' in response.getheader("WWW-Authenticate")
        assert json.loads(data) == {"error": "the bearer token is not the server's"}
        status, _, _ = client.exchange(method, path, body, headers={"Authorization": f"Basic {TOKEN}"}, token=None)
        assert status == 401
    assert client.exchange("GET", "/stats")[0] == 200
    assert client.exchange("POST", "/predict", _jpeg(32, 32))[0] == 200
    for open_path in ("/health", "/openapi.json", "/docs"):
        assert client.exchange("GET", open_path, token=None)[0] == 200, open_path


def test_the_openapi_document_describes_the_endpoints_and_their_parameters(server):
    _, client = server
    status, document = client.request("GET", "/openapi.json", token=None)
    assert status == 200
    assert {"/predict", "/predict/batch", "/health", "/stats", "/metrics"} <= set(document["paths"])
    predict = document["paths"]["/predict"]["post"]
    assert [p["name"] for p in predict["parameters"]] == ["conf", "iou", "max_det"]
    assert {"200", "400", "401", "413", "415", "503"} <= set(predict["responses"]) and "422" not in predict["responses"]
    assert "application/octet-stream" in predict["requestBody"]["content"]
    batch = document["paths"]["/predict/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert batch["properties"]["images"]["type"] == "array"
    assert {"PredictResponse", "BatchResponse", "ErrorResponse", "Stats"} <= set(document["components"]["schemas"])
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    status, _, page = client.exchange("GET", "/docs", token=None)
    assert status == 200 and b"swagger" in page.lower()


def test_metrics_count_requests_errors_and_latency_by_version_and_alias(server):
    from prometheus_client.parser import text_string_to_metric_families

    _, client = server

    def scrape() -> dict:
        status, response, data = client.exchange("GET", "/metrics")
        assert status == 200 and response.getheader("Content-Type").startswith("text/plain")
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(data.decode()) for sample in family.samples}

    def value(samples: dict, name: str, **labels) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    before = scrape()
    answers = [client.request("POST", "/predict", _jpeg(32, 32))[1] for _ in range(6)]
    client.request("POST", "/predict", b"not an image")
    client.request("POST", "/predict?conf=2", _jpeg(32, 32))
    after = scrape()

    for version, alias in (("1", "champion"), ("2", "challenger")):
        sent = sum(a["version"] == version for a in answers)
        ok = {"endpoint": "/predict", "status": "200", "version": version, "alias": alias}
        assert value(after, "cv_serving_requests_total", **ok) - value(before, "cv_serving_requests_total", **ok) == sent
        timed = {"endpoint": "/predict", "version": version, "alias": alias}
        assert (value(after, "cv_serving_request_duration_seconds_count", **timed)
                - value(before, "cv_serving_request_duration_seconds_count", **timed)) >= sent
        assert value(after, "cv_serving_model_info", model_name=MODEL, version=version, alias=alias) == 1
    not_an_image = sum(value(after, "cv_serving_errors_total", endpoint="/predict", status="415", version=v, alias=a)
                       - value(before, "cv_serving_errors_total", endpoint="/predict", status="415", version=v, alias=a)
                       for v, a in (("1", "champion"), ("2", "challenger")))
    assert not_an_image == 1
    refused = {"endpoint": "/predict", "status": "400", "version": "", "alias": ""}
    assert value(after, "cv_serving_errors_total", **refused) - value(before, "cv_serving_errors_total", **refused) == 1
    assert value(after, "cv_serving_queue_waiting") == 0


class BrokenModel:
    def predict(self, *args, **kwargs):
        raise RuntimeError("out of memory, say")


def test_a_failing_model_answers_a_json_500_and_the_service_goes_on(loaded, caplog):
    from cv_pipelines.serving.service import DetectionService, ServedModel, make_server

    champion = loaded[0]
    broken = ServedModel(alias="champion", name=champion.name, version=champion.version, copies=[BrokenModel()])
    with make_server(DetectionService(broken)).running() as running:
        client = Client(running.port)
        for _ in range(2):
            status, answer = client.request("POST", "/predict", _jpeg(32, 32))
            assert status == 500 and answer["error"] == "prediction failed: RuntimeError: out of memory, say"
            assert (answer["version"], answer["alias"]) == ("1", "champion")
        stats = client.request("GET", "/stats")[1]
    assert running.server_address[1] == client.port  # still known once closed (the main job reports it then)
    assert stats["versions"]["1"]["errors"] == 2 and stats["refused_before_model"] == 0
    assert "Prediction failed on version 1" in caplog.text  # a server-side failure is logged, with its traceback


# --- load ---------------------------------------------------------------------------------


def _fire(port: int, requests: int, body: bytes, token: str | None = None) -> list:
    """``requests`` concurrent POST /predict, each on its own connection, released together:
    ``(status, headers, JSON)`` or the exception each got."""
    barrier = threading.Barrier(requests)
    outcomes: list = [None] * requests

    def one(index: int) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        try:
            barrier.wait(timeout=60)
            connection.request("POST", "/predict", body=body, headers=headers)
            response = connection.getresponse()
            outcomes[index] = (response.status, dict(response.getheaders()), json.loads(response.read()))
        except Exception as exc:  # a reset, a refused connection, a timeout: what must not happen
            outcomes[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(requests)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def test_a_full_queue_answers_503_with_retry_after_at_once_and_resets_nothing(slow_server):
    service, client = slow_server
    started = time.monotonic()
    outcomes = _fire(client.port, 6, _jpeg(32, 32))
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert not failures, failures
    statuses = sorted(status for status, _, _ in outcomes)
    # One predicting, one waiting, four refused: 0.8 s a prediction, all six sent at once.
    assert statuses == [200, 200, 503, 503, 503, 503], statuses
    for status, headers, answer in outcomes:
        if status == 503:
            assert headers["retry-after"] == "2"
            assert answer == {"error": "the server is busy: 1 requests already wait for a worker; retry in 2 s"}
    assert time.monotonic() - started < 3 * 0.8 + 1.5  # the two admitted ones, not six in a row
    stats = client.request("GET", "/stats")[1]
    assert stats["refused_by_status"]["503"] == 4 and stats["versions"]["1"]["requests"] == 2
    assert stats["queue"] == {"waiting": 0, "running": 0, "workers": 1, "max_queue": 1}
    assert service.queue_depth == (0, 0)


def test_a_burst_of_200_concurrent_requests_is_answered_200_or_503_and_none_is_reset(server):
    service, client = server
    refused = service.refused_by_status[503]
    outcomes = _fire(client.port, 200, _jpeg(64, 48), TOKEN)
    failures = [o for o in outcomes if isinstance(o, Exception)]
    assert failures == [], f"{len(failures)} connection errors, e.g. {failures[:3]}"
    statuses = [status for status, _, _ in outcomes]
    assert set(statuses) <= {200, 503} and statuses.count(200) >= service.workers + service.max_queue, statuses
    assert service.refused_by_status[503] - refused == statuses.count(503)  # /stats counts every 503


# --- the command --------------------------------------------------------------------------


def test_startup_mistakes_end_in_one_sentence_before_anything_is_served(served_project, monkeypatch):
    from cv_pipelines.serving import server as server_module
    from cv_pipelines.serving.service import main

    def stops(argv: list[str], sentence: str) -> None:
        with pytest.raises(SystemExit) as stopped:
            main([*argv, "--env", "test"])
        assert str(stopped.value.code).startswith(f"Error: {sentence}"), stopped.value.code

    stops(["--port", "70000"], "--port must be between 0 and 65535 (0: any free port), got 70000")
    stops(["--port", "-1"], "--port must be between 0 and 65535 (0: any free port), got -1")
    stops(["--workers", "0"], "--workers must be at least 1, got 0")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        stops(["--port", str(port)], f"port {port} on 127.0.0.1 is already in use; stop what listens there")
    stops(["--port", "0", "--model-name", "nobody"], "registered model 'nobody' has no @champion to serve")
    # Not loopback and no token: refused before any socket is bound.
    monkeypatch.setattr(server_module, "bind_socket", lambda *a: pytest.fail("bound before the token check"))
    stops(["--host", "0.0.0.0", "--port", "0"], "serving on 0.0.0.0, an address other than loopback, needs a bearer token")
    monkeypatch.setenv("CV_SERVING_TOKEN", "two words")
    stops(["--port", "0"], "the serving token (from CV_SERVING_TOKEN or credentials.yml's 'serving.token') is empty or holds spaces")


def test_the_serving_command_serves_the_project_and_finishes_in_flight_requests_on_sigterm(served_project, tmp_path):
    root = served_project
    command = [sys.executable, "-m", "cv_pipelines.serving", "--port", "0", "--env", "test"]
    # The checkout's code, whatever the project copy holds.
    env = project_env(root, CV_SERVING_TOKEN=TOKEN, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)]))
    log = tmp_path / "stderr.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = process.stdout.readline()  # "Serving <model> version N (@champion) on http://host:port, bearer ..."
        assert line.startswith(f"Serving {MODEL} version 1 (@champion) on http://127.0.0.1:"), line
        assert line.rstrip().endswith(", bearer token required") and TOKEN not in line
        port = int(line.split("http://127.0.0.1:")[1].split(",")[0])
        client = Client(port, TOKEN)
        assert client.request("GET", "/health")[1]["champion"] == "1"
        status, answer = client.request("POST", "/predict", _jpeg(40, 30))
        assert status == 200 and answer["version"] == "1" and answer["alias"] == "champion"
        assert client.request("POST", "/predict", _jpeg(40, 30), token=None)[0] == 401

        # A request in flight when SIGTERM comes: its body half sent.
        image = _jpeg(80, 60)
        in_flight = socket.create_connection(("127.0.0.1", port), timeout=30)
        in_flight.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                          + b"\r\nContent-Length: %d\r\n\r\n" % len(image) + image[: len(image) // 2])
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert process.poll() is None, "the server exited with a request in flight"
        in_flight.sendall(image[len(image) // 2:])
        answer = b""
        while chunk := in_flight.recv(65536):  # the server closes once it has answered
            answer += chunk
        in_flight.close()
        status, headers, body = split_response(answer)
        assert status == 200 and headers["connection"] == "close" and json.loads(body)["version"] == "1"
        assert process.wait(timeout=30) == 0
        stderr = log.read_text()
        assert "Shutting down" in stderr
        assert "Traceback" not in stderr and TOKEN not in stderr, stderr[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def test_mlflow_models_serve_answers_with_the_packaged_model(served_project):
    """MLflow's own scoring server on ``models:/<name>@champion``: base64 images in JSON, detections out."""
    deployed = served_project
    with socket.socket() as probe:  # a free port for a server that cannot report the one it took
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    venv_bin = str(Path(sys.executable).parent)
    env = project_env(deployed, MLFLOW_TRACKING_URI=f"sqlite:///{deployed / 'data/mlflow/mlflow.db'}",
                      PATH=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    command = [str(Path(venv_bin) / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}@champion",
               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, cwd=deployed, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    client = Client(port)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "mlflow models serve exited"
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/ping")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            time.sleep(0.5)

        def invoke(data: bytes):
            body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(data).decode()]]},
                    "params": {"conf": 0.0001, "max_det": 4}}
            return client.request("POST", "/invocations", json.dumps(body).encode(),
                                  {"Content-Type": "application/json"})

        status, answer = invoke(_jpeg(100, 60))
        assert status == 200 and 0 < len(answer["predictions"]) <= 4
        first = answer["predictions"][0]
        assert set(first) == {"image_index", "class_id", "class_name", "score", "x1", "y1", "x2", "y2"}
        assert first["class_name"] in LABELS and 0 <= first["x1"] <= first["x2"] <= 100
        status, answer = invoke(b"not an image")
        assert status == 400 and "not an image" in answer["message"]
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
