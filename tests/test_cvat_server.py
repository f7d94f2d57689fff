"""The stand-in CVAT answers what cvat-sdk 2.80's own models accept, so it cannot drift."""

from __future__ import annotations

import json

import pytest
from cvat_sdk.api_client import Configuration, model_utils, models
from cvat_sdk.api_client.exceptions import ApiTypeError, ApiValueError

from tests.cvat_server import CvatStandIn
from tests.cvat_server.server import Job, Task


def validate(body: dict, model) -> object:
    """Deserialise ``body`` exactly as the SDK does with a server's answer."""
    return model_utils.validate_and_convert_types(
        body, (model,), ["received_data"], True, True, configuration=Configuration()
    )


@pytest.fixture
def populated():
    server = CvatStandIn()
    server.url = "http://127.0.0.1:1"
    server.projects[1] = {"id": 1, "name": "p", "created": "2026-01-01T00:00:00Z"}
    server.labels[2] = {"id": 2, "name": "circle", "type": "rectangle", "project_id": 1}
    server.labels[3] = {"id": 3, "name": "exclude", "type": "tag", "project_id": 1}
    task = Task(id=4, name="batch_x", project_id=1, segment_size=2, frames=["a.jpg", "b.jpg"],
                image_sizes={"a.jpg": (10, 8), "b.jpg": (10, 8)}, job_ids=[5])
    server.tasks[4] = task
    server.jobs[5] = Job(id=5, task_id=4, start_frame=0, stop_frame=1, state="completed", assignee="annotator")
    server.annotate(4, "a.jpg", [("circle", 1, 1, 5, 5)])
    server.tag(4, "b.jpg", "exclude")
    return server


def test_every_canned_body_is_a_valid_sdk_model(populated):
    server = populated
    rq_id = server.new_request("export", "task", 4)
    server.requests[rq_id].update(status="finished", result_url="http://127.0.0.1:1/x", result_id=4)
    page = lambda items: {"count": len(items), "next": None, "previous": None, "results": items}  # noqa: E731
    cases = [
        (server.about_json(), models.About),
        (server.project_json(server.projects[1]), models.ProjectRead),
        (server.task_json(server.tasks[4]), models.TaskRead),
        (server.job_json(server.jobs[5]), models.JobRead),
        (server.request_json(rq_id), models.Request),
        (server.meta_json(server.tasks[4]), models.DataMetaRead),
        (server.label_json(server.labels[2]), models.Label),
        (server.annotations_json(server.tasks[4]), models.LabeledData),
        (page([server.project_json(server.projects[1])]), models.PaginatedProjectReadList),
        (page([server.task_json(server.tasks[4])]), models.PaginatedTaskReadList),
        (page([server.job_json(server.jobs[5])]), models.PaginatedJobReadList),
        (page([server.label_json(server.labels[3])]), models.PaginatedLabelList),
        ({"rq_id": rq_id}, models.RqId),
    ]
    for body, model in cases:
        parsed = validate(body, model)
        assert isinstance(parsed, model), model


def test_the_validation_catches_a_drifted_body(populated):
    task = populated.task_json(populated.tasks[4])
    with pytest.raises(ApiTypeError):
        validate({**task, "id": "4"}, models.TaskRead)  # an id as a string
    rq_id = populated.new_request("export", "task", 4)
    request = populated.request_json(rq_id)
    with pytest.raises(ApiValueError):
        validate({**request, "progress": 50}, models.Request)  # progress is 0..1
    with pytest.raises(ApiValueError):
        validate({**request, "status": "done"}, models.Request)  # not a request status
    broken = dict(task)
    del broken["jobs"]
    with pytest.raises((TypeError, ApiTypeError)):
        validate(broken, models.TaskRead)  # a required key missing


def test_request_ids_with_slashes_survive_the_sdk_round_trip():
    import cvat_sdk

    with CvatStandIn() as server:
        client = cvat_sdk.make_client(server.url, access_token="test-token")
        rq_id = server.new_request("export", "task", 0)
        assert "/" in rq_id or "+" in rq_id
        server.requests[rq_id]["status"] = "finished"
        request, _ = client.api_client.requests_api.retrieve(rq_id)
        assert request.id == rq_id and request.status.value == "finished"


# --- behaving like CVAT where the project depends on it ---------------------------------


@pytest.fixture
def served():
    """A started stand-in with a project and a task of two share frames (created through the SDK)."""
    import cvat_sdk
    from cvat_sdk.core.proxies.tasks import ResourceType

    with CvatStandIn() as server:
        client = cvat_sdk.make_client(server.url, access_token="test-token")
        client.config.status_check_period = 0.01
        project = client.projects.create(models.ProjectWriteRequest(
            name="p", labels=[models.PatchedLabelRequest(name="circle", type="rectangle")]))
        task = client.tasks.create_from_data(
            models.TaskWriteRequest(name="t", project_id=project.id), resources=["a/1.jpg", "a/2.jpg"],
            resource_type=ResourceType.SHARE,
        )
        yield server, client, task


def test_background_requests_go_queued_started_finished_and_do_their_work_last(served):
    _, client, _ = served
    api = client.api_client
    task, _ = api.tasks_api.create(models.TaskWriteRequest(name="u"))
    rq, _ = api.tasks_api.create_data(task.id, data_request=models.DataRequest(image_quality=70, server_files=["x.jpg"]))
    statuses = []
    while not statuses or statuses[-1] not in ("finished", "failed"):
        statuses.append(api.requests_api.retrieve(rq.rq_id)[0].status.value)
        frames_now = api.tasks_api.retrieve(task.id)[0].size
        assert frames_now == (1 if statuses[-1] == "finished" else 0)  # the worker adds the frames when it runs
    assert statuses == ["queued", "started", "finished"]

    export, _ = api.tasks_api.create_dataset_export("COCO 1.0", task.id, save_images=False)
    assert [api.requests_api.retrieve(export.rq_id)[0].status.value for _ in range(3)] == ["queued", "started", "finished"]


def test_an_export_format_cvat_does_not_know_is_refused_with_400(served, tmp_path):
    from cvat_sdk.api_client.exceptions import ApiException

    _, _, task = served
    with pytest.raises(ApiException) as refused:
        task.export_dataset("COCO 9.9", tmp_path / "x.zip", include_images=False)
    assert refused.value.status == 400
    assert json.loads(refused.value.body) == ["Unknown format specified for the request"]
    task.export_dataset("COCO 1.0", tmp_path / "ok.zip", include_images=False)  # the one it knows
    assert (tmp_path / "ok.zip").stat().st_size > 0


def test_a_cookie_session_writes_only_with_its_csrf_token():
    import cvat_sdk
    import urllib3

    with CvatStandIn() as server:
        client = cvat_sdk.make_client(server.url, credentials=("annotator", "secret"))  # sends X-CSRFToken
        client.projects.create(models.ProjectWriteRequest(name="by session"))
        cookies = client.api_client.cookies
        cookie = f"sessionid={cookies['sessionid'].value}; csrftoken={cookies['csrftoken'].value}"
        http = urllib3.PoolManager()

        def post(**headers):
            return http.request("POST", f"{server.url}/api/projects", body=json.dumps({"name": "raw"}),
                                headers={"Cookie": cookie, "Content-Type": "application/json", **headers})

        assert http.request("GET", f"{server.url}/api/projects", headers={"Cookie": cookie}).status == 200
        missing, wrong = post(), post(**{"X-CSRFToken": "not-the-token"})
        assert (missing.status, missing.json()) == (403, {"detail": "CSRF Failed: CSRF token missing."})
        assert (wrong.status, wrong.json()) == (403, {"detail": "CSRF Failed: CSRF token incorrect."})
        assert post(**{"X-CSRFToken": cookies["csrftoken"].value}).status == 201
        assert sorted(p["name"] for p in server.projects.values()) == ["by session", "raw"]


@pytest.mark.parametrize(
    ("path", "body", "why"),
    [
        ("/api/tasks", {"segment_size": 2}, "required 'name' missing"),
        ("/api/tasks", {"name": 7}, "a name that is no string"),
        ("/api/projects", {"name": "p", "labels": "circle"}, "labels that are no list"),
        ("/api/auth/login", {"username": "annotator"}, "no password"),
    ],
)
def test_request_bodies_are_validated_against_the_sdk_request_models(path, body, why):
    import urllib3

    with CvatStandIn() as server:
        answer = urllib3.PoolManager().request(
            "POST", f"{server.url}{path}", body=json.dumps(body),
            headers={"Authorization": "Bearer test-token", "Content-Type": "application/json"},
        )
        assert answer.status == 400, why
        assert not server.tasks and not server.projects


def test_listings_paginate_and_the_sdk_reads_every_page():
    import cvat_sdk
    import urllib3

    with CvatStandIn(page_size=2) as server:
        client = cvat_sdk.make_client(server.url, access_token="test-token")
        for i in range(5):
            client.projects.create(models.ProjectWriteRequest(name=f"p{i}"))
        assert sorted(p.name for p in client.projects.list()) == [f"p{i}" for i in range(5)]
        http, auth = urllib3.PoolManager(), {"Authorization": "Bearer test-token"}
        first = http.request("GET", f"{server.url}/api/projects?page_size=3", headers=auth).json()
        assert (first["count"], len(first["results"]), first["previous"]) == (5, 3, None)
        second = http.request("GET", first["next"], headers=auth).json()
        assert [p["name"] for p in second["results"]] == ["p3", "p4"] and second["next"] is None
        assert "page_size=3" in second["previous"]
        past = http.request("GET", f"{server.url}/api/projects?page=4", headers=auth)
        assert (past.status, past.json()) == (404, {"detail": "Invalid page."})


def test_gateway_faults_and_dropped_connections_reach_the_sdk_as_they_would(served):
    import urllib3
    from cvat_sdk.api_client.exceptions import ApiException

    server, client, task = served
    api = client.api_client
    server.inject("bad_gateway", path_prefix="/api/tasks/", method="GET")
    server.inject("dropped", path_prefix="/api/tasks/", method="GET")
    assert api.tasks_api.retrieve(task.id)[0].name == "t"  # urllib3 retries both on a GET
    assert [kind for kind, *_ in server.injected] == ["bad_gateway", "dropped"]

    server.inject("gateway_timeout", path_prefix="/api/projects", method="POST")
    with pytest.raises(ApiException) as timed_out:  # a POST is never retried by urllib3
        api.projects_api.create(models.ProjectWriteRequest(name="q"))
    assert timed_out.value.status == 504
    server.inject("dropped_after", path_prefix="/api/projects", method="POST")
    with pytest.raises(urllib3.exceptions.HTTPError):
        api.projects_api.create(models.ProjectWriteRequest(name="r"))
    assert "r" in {p["name"] for p in server.projects.values()}  # done, though the client never heard

    server.inject("unavailable", path_prefix="/api/", skip=1)  # the second request, whatever it is
    api.server_api.retrieve_about()
    api.tasks_api.retrieve(task.id)  # answered after urllib3's retry
    assert server.injected[-1] == ("unavailable", "GET", f"/api/tasks/{task.id}")
