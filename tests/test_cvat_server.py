"""The stand-in CVAT answers what cvat-sdk 2.80's own models accept, so it cannot drift."""

from __future__ import annotations

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
