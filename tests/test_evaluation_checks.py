"""The evaluation measures a run on the export it trained on, re-hashed from the files on disk.

The export is built once per module by the export pipeline's nodes (``tests.test_export``),
and each test edits its own copy; the trained model is a ``TrackedModel`` carrying the
lineage a training records, so no training runs.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cv_pipelines.config.resolvers import project_relative
from cv_pipelines.errors import ConfigurationError
from cv_pipelines.exports.versions import ExportRef, find_export
from cv_pipelines.exports.writing import content_hash_on_disk
from cv_pipelines.models.runs import TrackedModel
from cv_pipelines.pipelines.evaluation.nodes import _export_of
from tests.conftest import OFFLINE_ENV, make_project_copy
from tests.test_export import ingest, label, run_export_nodes, small_images


@pytest.fixture(scope="module")
def written_exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose export nodes wrote demo_v1 twice: YOLO in data/exports, COCO in data/exports_coco."""
    root = make_project_copy(tmp_path_factory.mktemp("written_exports") / "project")
    with pytest.MonkeyPatch.context() as patch:  # what the project fixture sets, for one module
        for name, value in {**OFFLINE_ENV, "CV_PIPELINES_PROJECT_ROOT": str(root),
                            "YOLO_CONFIG_DIR": str(root / ".ultralytics")}.items():
            patch.setenv(name, value)
        patch.chdir(root)
        rows = ingest(root, small_images(10))
        for i, row in enumerate(rows.values()):
            label(root, row, [("circle", 2, 2, 20, 20), ("star", 5, 6, 40, 30)] if i % 3 else [])
        run_export_nodes(root)
        run_export_nodes(root, format="coco", exports_dir="data/exports_coco")
    return root


@pytest.fixture
def project(written_exports: Path, tmp_path: Path) -> Path:
    """A private copy of the written exports: a test may edit its files."""
    root = tmp_path / "project"
    for name in ("exports", "exports_coco"):
        shutil.copytree(written_exports / "data" / name, root / "data" / name)
    return root


def build_export(project: Path, *, fmt: str = "yolo") -> ExportRef:
    """The export of ``fmt`` the nodes wrote (demo_v1)."""
    return find_export(project / ("data/exports" if fmt == "yolo" else "data/exports_coco"), "demo", 1, fmt=fmt)


def trained_on(export: ExportRef, project: Path) -> TrackedModel:
    """A trained model whose run recorded ``export`` the way a training records it (``data.*`` tags)."""
    lineage = {**export.lineage(), "export_path": project_relative(export.path, project)}
    return TrackedModel(run_id="a1b2c3d4e5f6", weights=project / "data/models/best.pt", lineage=lineage)


def scan_labels_like_training(export: ExportRef, project: Path) -> None:
    """Ultralytics' label scan, as training does it: it writes ``labels/<split>.cache`` into the export."""
    from cv_pipelines.config.offline import ultralytics_settings_offline

    ultralytics_settings_offline(project)
    from ultralytics.data.dataset import YOLODataset

    data = {"names": dict(enumerate(export.info["classes"])), "channels": 3}
    for split in ("train", "test"):
        YOLODataset(img_path=str(export.path / "images" / split), data=data, task="detect", augment=False)


def test_the_files_as_written_re_hash_to_the_recorded_content_hash(project):
    yolo = build_export(project)
    assert content_hash_on_disk(yolo.path, fmt="yolo") == yolo.info["content_hash"]
    coco = build_export(project, fmt="coco")
    assert coco.info["content_hash"] != yolo.info["content_hash"]
    assert content_hash_on_disk(coco.path, fmt="coco") == coco.info["content_hash"]


def test_the_export_a_run_trained_on_is_accepted_after_training_read_it(project):
    export = build_export(project)
    scan_labels_like_training(export, project)
    assert {p.name for p in (export.path / "labels").glob("*.cache")} == {"train.cache", "test.cache"}
    (export.path / "dataset.yaml").write_text(
        (export.path / "dataset.yaml").read_text().replace(str(export.path.resolve()), "/elsewhere/demo_v1")
    )  # a clone elsewhere: the path line is stale, and does not count

    assert _export_of(trained_on(export, project), project) == export


def _edit_a_label(export: Path) -> None:
    first = sorted((export / "labels").glob("*/*.txt"))[0]
    first.write_text(first.read_text() + "1 0.5 0.5 0.1 0.1\n")


def _remove_an_image(export: Path) -> None:
    sorted((export / "images").glob("*/*"))[0].unlink()


def _add_a_file(export: Path) -> None:
    (export / "labels/test/notes.txt").write_text("")


def _rename_a_class(export: Path) -> None:
    yaml_file = export / "dataset.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("circle", "disc"))


@pytest.mark.parametrize(
    "edit",
    [_edit_a_label, _remove_an_image, _add_a_file, _rename_a_class],
    ids=["label edited", "image removed", "file added", "class renamed"],
)
def test_an_export_changed_after_the_training_is_refused_naming_it(project, edit: Callable[[Path], None]):
    export = build_export(project)
    scan_labels_like_training(export, project)
    trained = trained_on(export, project)
    edit(export.path)

    with pytest.raises(ConfigurationError) as refused:
        _export_of(trained, project)

    message = str(refused.value)
    assert message.startswith("export demo_v1 no longer holds the data training run a1b2c3d4e5f6 was trained on")
    assert "\n" not in message and ". " not in message  # one sentence
    assert export.info["content_hash"][:12] in message  # the hash the run recorded
    # export_info.yaml still records the hash the run trained on: only the re-hash sees the edit.
    assert find_export(project / "data/exports", "demo", 1).info["content_hash"] == trained.lineage[
        "export_content_hash"
    ]


def test_a_replaced_export_is_still_refused_on_its_recorded_hash(project):
    export = build_export(project)
    trained = trained_on(export, project)
    trained.lineage["export_content_hash"] = "0" * 64  # the run trained on other content under that name
    with pytest.raises(ConfigurationError, match=r"^export demo_v1 no longer holds the data training run"):
        _export_of(trained, project)
