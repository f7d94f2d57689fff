"""Dataset versions: DVC snapshots, tags, and reading any version without a checkout."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from cv_pipelines.errors import ConfigurationError, ExternalServiceError
from cv_pipelines.images.ingestion import ingest_images, read_images_registry
from cv_pipelines.versioning.dataset_versions import (
    SnapshotError,
    ensure_images_present,
    pointed_object,
    read_registry_at,
    snapshot_dataset,
)
from tests.support.images import image_bytes, write
from tests.test_ingestion import settings_for


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


def add_images(root: Path, seeds: range) -> None:
    for seed in seeds:
        write(root / f"data/incoming/img_{seed}.jpg", image_bytes(seed))
    ingest_images(settings_for(root))


def snapshot(root: Path, message: str = "test snapshot"):
    return snapshot_dataset(
        root, store_dir=Path("data/store/images"), registry_dir=Path("data/registry"), label_set="demo", message=message
    )


def test_snapshot_commits_only_pointer_files_and_tags_a_version(project):
    add_images(project, range(12))
    (project / "notes.txt").write_text("the user's own work")
    git(project, "add", "notes.txt")  # staged by the user; must stay out of the snapshot

    result = snapshot(project, "Dataset snapshot of demo: first batch")

    assert result.committed and result.tag == "data/demo/v1"
    committed = git(project, "show", "--name-only", "--format=", result.commit).splitlines()
    assert committed and all(p.endswith((".dvc", ".gitignore")) for p in committed)
    assert "data/registry/images.dvc" in committed
    assert any(p.startswith("data/store/images/") and p.endswith(".dvc") for p in committed)
    assert git(project, "diff", "--cached", "--name-only") == "notes.txt"
    assert git(project, "log", "-1", "--format=%s") == "Dataset snapshot of demo: first batch"
    assert git(project, "rev-parse", "data/demo/v1^{commit}") == result.commit
    remote = project.parent / "cv_pipelines-dvc-remote"
    assert remote.exists() and any(remote.rglob("*"))  # pushed to the local remote next to the clone

    again = snapshot(project)
    assert not again.committed and "nothing changed" in again.summary()
    assert git(project, "tag", "--list", "data/*").splitlines() == ["data/demo/v1"]


def test_a_second_snapshot_touches_only_changed_shards(project):
    add_images(project, range(40))
    first = snapshot(project)
    add_images(project, range(100, 102))  # two images: at most two store shards change
    second = snapshot(project)
    assert second.tag == "data/demo/v2"
    store_pointers = [p for p in second.changed_targets if p.startswith("data/store/images/") and p.endswith(".dvc")]
    assert 1 <= len(store_pointers) <= 2
    assert len([p for p in first.changed_targets if p.startswith("data/store/images/") and p.endswith(".dvc")]) > 2


def store_listings(root: Path) -> dict[str, str]:
    """Each store shard's pointer and the ``.dir`` listing it names."""
    return {p.name: pointed_object(p).value for p in sorted((root / "data/store/images").glob("*.dvc"))}


def objects_missing_from_remote(root: Path) -> list[str]:
    """Every listing a pointer names, and every file in it, that the DVC remote lacks."""
    remote = root.parent / "cv_pipelines-dvc-remote" / "files" / "md5"
    missing = []
    for pointer in sorted((root / "data").rglob("*.dvc")):
        listing = pointed_object(pointer).value
        path = remote / listing[:2] / listing[2:]
        if not path.exists():
            missing.append(f"{pointer.name}: {listing}")
            continue
        missing += [f"{pointer.name}: {e['md5']}" for e in json.loads(path.read_text())
                    if not (remote / e["md5"][:2] / e["md5"][2:]).exists()]
    return missing


def shard_of(seed: int) -> str:
    return hashlib.sha256(image_bytes(seed)).hexdigest()[:2]


def seeds(n: int, *, in_shards_of: Path, tracked: bool = True) -> list[int]:
    """``n`` image seeds whose store shard already has a pointer (or, tracked=False, has none)."""
    shards = {p.stem for p in (in_shards_of / "data/store/images").glob("*.dvc")}
    return [s for s in range(1000, 5000) if (shard_of(s) in shards) == tracked][:n]


def test_a_small_batch_re_adds_only_its_sub_folders_and_matches_a_full_re_add(project, monkeypatch):
    from dvc.repo import Repo

    add_images(project, range(30))
    snapshot(project)
    # Three new images in shards that already have a pointer, one in a new shard.
    in_old, in_new = seeds(3, in_shards_of=project), seeds(1, in_shards_of=project, tracked=False)
    added = []
    original_add = Repo.add
    monkeypatch.setattr(Repo, "add", lambda self, targets, **kw: added.extend(targets) or original_add(self, targets, **kw))
    add_images(project, in_old + in_new)
    second = snapshot(project)
    assert second.committed
    store = (project / "data/store/images").as_posix()
    store_targets = sorted(Path(t).relative_to(store).as_posix() for t in added if t.startswith(store + "/"))
    assert [t for t in store_targets if "/" not in t] == [shard_of(in_new[0])]  # a new shard: added whole
    assert {t.split("/")[0] for t in store_targets if "/" in t} == {shard_of(s) for s in in_old}  # old: ab/cd only
    assert objects_missing_from_remote(project) == []  # the new images were pushed, not only the listings
    granular = store_listings(project)

    (project / ".dvc/tmp/cv_pipelines_snapshot_state.json").unlink()  # next snapshot re-adds every folder whole
    snapshot(project)
    assert store_listings(project) == granular


def test_a_snapshot_that_failed_to_push_is_pushed_in_full_by_the_next(project, monkeypatch):
    import dvc_data.hashfile.transfer

    add_images(project, range(20))
    snapshot(project)
    add_images(project, range(50, 53))

    def network_down(*args, **kwargs):
        raise OSError("network down")

    with monkeypatch.context() as patch:
        patch.setattr(dvc_data.hashfile.transfer, "transfer", network_down)
        with pytest.raises(ExternalServiceError, match="network down"):
            snapshot(project)  # the pointers are re-added, their listings never reach the remote
    assert git(project, "tag", "--list", "data/*").splitlines() == ["data/demo/v1"]
    assert git(project, "status", "--porcelain") == ""  # the re-added pointers were put back

    again = snapshot(project)
    assert again.tag == "data/demo/v2"
    assert objects_missing_from_remote(project) == []


def test_pointers_changed_outside_a_snapshot_are_re_added_whole(project):
    add_images(project, range(20))
    snapshot(project)
    add_images(project, seeds(3, in_shards_of=project))
    snapshot(project)
    at_v2 = store_listings(project)
    git(project, "checkout", "data/demo/v1", "--", "data/store/images")  # v1's pointers, v2's images
    assert store_listings(project) != at_v2

    snapshot(project)
    assert store_listings(project) == at_v2


def test_a_shard_whose_listing_left_the_cache_is_re_added_whole(project):
    def snapshot_without_push():
        return snapshot_dataset(project, store_dir=Path("data/store/images"), registry_dir=Path("data/registry"),
                                label_set="demo", message="no push", push=False)

    add_images(project, range(20))
    snapshot_without_push()  # the listings exist only in the cache
    shutil.rmtree(project / ".dvc/cache")
    in_old = seeds(2, in_shards_of=project)
    add_images(project, in_old)

    assert snapshot_without_push().committed  # no sub-folder splice into a listing that is nowhere
    shards = {shard_of(s) for s in in_old}
    listings = {name: value for name, value in store_listings(project).items() if name[:2] in shards}
    (project / ".dvc/tmp/cv_pipelines_snapshot_state.json").unlink()
    snapshot_without_push()
    assert {name: value for name, value in store_listings(project).items() if name[:2] in shards} == listings


def test_reading_an_old_version_without_touching_the_working_tree(project):
    add_images(project, range(5))
    snapshot(project)
    v1_registry = read_images_registry(project / "data/registry")
    add_images(project, range(5, 9))
    snapshot(project)
    head_before = git(project, "rev-parse", "HEAD")
    status_before = git(project, "status", "--porcelain")

    at_v1 = read_registry_at(project, Path("data/registry/images"), "data/demo/v1")
    at_v2 = read_registry_at(project, Path("data/registry/images"), "data/demo/v2")

    pd.testing.assert_frame_equal(
        at_v1.sort_values("image_id").reset_index(drop=True), v1_registry.sort_values("image_id").reset_index(drop=True)
    )
    assert len(at_v2) == 9 and len(read_images_registry(project / "data/registry")) == 9
    assert git(project, "rev-parse", "HEAD") == head_before
    assert git(project, "status", "--porcelain") == status_before


def test_a_deleted_image_is_restored_from_the_remote(project):
    add_images(project, range(3))
    snapshot(project)
    path = read_images_registry(project / "data/registry")["path"].iloc[0]
    original = (project / path).read_bytes()
    (project / path).chmod(0o644)
    (project / path).unlink()
    shutil.rmtree(project / ".dvc/cache")  # only the remote still has it

    assert ensure_images_present(project, [path], "data/demo/v1") == 1
    assert (project / path).read_bytes() == original


def test_unknown_version_and_detached_head_are_refused_clearly(project):
    add_images(project, range(2))
    with pytest.raises(ConfigurationError, match="is not a tag or revision"):
        read_registry_at(project, Path("data/registry/images"), "data/demo/v9")
    git(project, "checkout", "-q", "--detach")
    with pytest.raises(SnapshotError, match="HEAD is detached"):
        snapshot(project)


def conflicting_branch(root: Path) -> None:
    """A branch ``other`` and ``main`` that both changed README.md's first line since they split."""
    git(root, "checkout", "-q", "-b", "other")
    readme = root / "README.md"
    original = readme.read_text()
    readme.write_text("other's title\n" + original)
    git(root, "commit", "-q", "-am", "other's change")
    git(root, "checkout", "-q", "main")
    readme.write_text("main's title\n" + original)
    git(root, "commit", "-q", "-am", "main's change")


def assert_nothing_committed_or_tagged(root: Path, head: str, marker: str) -> None:
    assert git(root, "rev-parse", "HEAD") == head
    assert git(root, "tag", "--list") == ""
    assert not list((root / "data").rglob("*.dvc"))
    assert git(root, "diff", "--cached", "--name-only") == "README.md"  # only the user's conflict
    assert (root / ".git" / marker).exists()  # the user's merge or rebase is left as it was


@pytest.mark.parametrize(
    ("start", "what", "marker"),
    [
        (("merge", "other"), "a merge", "MERGE_HEAD"),
        (("rebase", "other"), "a rebase", "rebase-merge"),  # stops at the conflicting commit, HEAD detached
    ],
    ids=["merge", "rebase"],
)
def test_a_merge_or_rebase_in_progress_is_refused_and_nothing_committed(project, start, what, marker):
    add_images(project, range(2))
    conflicting_branch(project)
    stopped = subprocess.run(["git", *start], cwd=project, capture_output=True, text=True)
    assert stopped.returncode != 0 and "CONFLICT" in stopped.stdout
    head = git(project, "rev-parse", "HEAD")  # a stopped rebase has moved HEAD onto "other"
    with pytest.raises(SnapshotError) as refused:
        snapshot(project)
    assert str(refused.value) == f"The repository is in the middle of {what}; finish or abort it, then snapshot again."
    assert_nothing_committed_or_tagged(project, head, marker)


def test_snapshot_pipeline_runs_through_kedro(project):
    from tests.conftest import run_pipeline

    add_images(project, range(3))
    run_pipeline(project, "snapshot")
    assert git(project, "tag", "--list", "data/*") == "data/demo/v1"
    report = (project / "data/reporting/snapshot/last_snapshot.yml").read_text()
    assert "committed: true" in report


def test_the_catalog_reads_registries_at_a_dataset_version(project):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    add_images(project, range(4))
    snapshot(project)
    add_images(project, range(4, 7))
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="test", runtime_params={"dataset_version": "data/demo/v1"}) as s:
        catalog = s.load_context().catalog
        at_v1 = catalog.load("images_registry")
        with pytest.raises(Exception, match="read-only"):
            catalog.save("images_registry", at_v1)
    with KedroSession.create(project_path=project, env="test") as s:
        current = s.load_context().catalog.load("images_registry")
    assert (len(at_v1), len(current)) == (4, 7)


# --- the DVC remote: lost objects are pushed again, an unwritable one stops the snapshot -----------


def dvc_status_cloud(root: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status(cloud=True)


def test_a_remote_that_lost_its_objects_gets_all_of_the_next_version(project, tmp_path):
    from dvc.repo import Repo

    add_images(project, range(20))
    snapshot(project)
    shutil.rmtree(project.parent / "cv_pipelines-dvc-remote")
    add_images(project, range(50, 53))

    assert snapshot(project).tag == "data/demo/v2"
    assert objects_missing_from_remote(project) == []
    assert dvc_status_cloud(project) == {}
    clone = tmp_path / "clone"  # beside the project: the same relative remote
    subprocess.run(["git", "clone", "-q", "--branch", "data/demo/v2", str(project), str(clone)], check=True)
    with Repo(str(clone)) as repo:
        repo.pull()
    assert len([p for p in (clone / "data/store/images").rglob("*.jpg")]) == 23


def make_unwritable(remote: Path, project: Path, tmp_path: Path) -> None:
    """The remote folder read-only; as root, whom permissions do not stop, a remote below a regular file."""
    if os.geteuid() != 0:
        for folder in [remote, *(p for p in remote.rglob("*") if p.is_dir())]:
            folder.chmod(0o555)
        return
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    (project / ".dvc/config.local").write_text(f"['remote \"local\"']\n    url = {blocker / 'remote'}\n")


def test_an_unwritable_remote_stops_the_snapshot_with_one_sentence_and_leaves_the_tree_as_it_was(project, tmp_path):
    add_images(project, range(10))
    snapshot(project)
    remote = project.parent / "cv_pipelines-dvc-remote"
    make_unwritable(remote, project, tmp_path)
    add_images(project, range(40, 44))
    pointers = {p: p.read_bytes() for p in (project / "data").rglob("*.dvc")}

    with pytest.raises(ExternalServiceError) as refused:
        snapshot(project)
    sentence = refused.value.message
    assert "\n" not in sentence and sentence.count(". ") == 0, sentence
    assert sentence.startswith("The DVC remote 'local' (") and "make the remote writable" in sentence, sentence
    assert git(project, "status", "--porcelain") == ""  # no pointer modified, nothing staged
    assert {p: p.read_bytes() for p in (project / "data").rglob("*.dvc")} == pointers
    assert git(project, "tag", "--list", "data/*") == "data/demo/v1"

    (project / ".dvc/config.local").unlink(missing_ok=True)
    for folder in [remote, *(p for p in remote.rglob("*") if p.is_dir())]:
        folder.chmod(0o755)
    assert snapshot(project).tag == "data/demo/v2"
    assert objects_missing_from_remote(project) == []


def test_a_snapshot_with_an_unwritable_remote_exits_3_through_kedro(project, tmp_path):
    from tests.support.cli import kedro_cli

    add_images(project, range(3))
    make_unwritable(project.parent / "cv_pipelines-dvc-remote", project, tmp_path)
    result = kedro_cli(project, "run", "--pipelines", "snapshot")
    assert result.exit_code == 3, result.output
    assert "The DVC remote 'local'" in result.output and "could not be written" in result.output
    assert git(project, "tag", "--list") == "" and git(project, "status", "--porcelain") == ""


# --- one sentence for a dataset version that does not exist or whose images are gone ------------


def test_a_dataset_version_that_does_not_exist_is_refused_before_any_node_runs(project):
    from cv_pipelines.datasets.parquet_registry_dataset import ParquetRegistryDataset
    from tests.support.cli import kedro_cli

    add_images(project, range(2))
    snapshot(project)
    with pytest.raises(ConfigurationError, match=r"dataset_version 'data/demo/v9' is not a tag or revision"):
        ParquetRegistryDataset(path="data/registry/images", rev="data/demo/v9").check_loadable()
    ParquetRegistryDataset(path="data/registry/images", rev="data/demo/v1").check_loadable()

    result = kedro_cli(project, "run", "--pipelines", "export", "--params", "dataset_version=data/demo/v9")
    assert result.exit_code == 2, result.output
    assert "Error: dataset_version 'data/demo/v9' is not a tag or revision" in result.output


def test_a_dataset_version_that_does_not_exist_exits_2_without_a_traceback(project):
    """The real command's exit status and stderr for an unknown ``dataset_version`` (three tracebacks before)."""
    from tests.conftest import run_kedro

    completed = run_kedro(project, "run", "--pipelines", "export", "--params", "dataset_version=data/demo/v9")
    assert completed.returncode == 2, completed.stderr
    assert "dataset_version 'data/demo/v9' is not a tag or revision" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_images_gone_from_the_store_cache_and_remote_are_one_sentence(project):
    from tests.support.cli import kedro_cli
    from tests.test_export import ingest, label, small_images

    for row in ingest(project, small_images(3)).values():
        label(project, row, [("ring", 1, 1, 30, 20)])
    snapshot(project)
    paths = read_images_registry(project / "data/registry")["path"].tolist()
    for path in paths:  # the images, not the listings or the registries, gone from everywhere
        md5 = hashlib.md5((project / path).read_bytes()).hexdigest()
        for objects in (project / ".dvc/cache/files/md5", project.parent / "cv_pipelines-dvc-remote/files/md5"):
            (objects / md5[:2] / md5[2:]).unlink()
        (project / path).chmod(0o644)
        (project / path).unlink()

    with pytest.raises(ExternalServiceError) as lost:
        ensure_images_present(project, paths, "data/demo/v1")
    assert lost.value.message.startswith(
        f"3 image(s) of dataset version 'data/demo/v1' are in neither the store, the DVC cache nor the DVC remote (the first: {paths[0]})"
    )
    result = kedro_cli(project, "run", "--pipelines", "export", "--params", "dataset_version=data/demo/v1")
    assert result.exit_code == 3, result.output
    assert "Error: 3 image(s) of dataset version 'data/demo/v1' are in neither" in result.output


def test_registries_gone_from_the_cache_and_remote_are_one_sentence(project):
    """A version whose registry parts (not its images) are gone: the registry dataset says so, exit 3."""
    from tests.support.cli import kedro_cli
    from tests.test_export import ingest, label, small_images

    for row in ingest(project, small_images(2)).values():
        label(project, row, [("ring", 1, 1, 30, 20)])
    snapshot(project)
    for part in (project / "data/registry").rglob("*.parquet"):
        md5 = hashlib.md5(part.read_bytes()).hexdigest()
        for objects in (project / ".dvc/cache/files/md5", project.parent / "cv_pipelines-dvc-remote/files/md5"):
            (objects / md5[:2] / md5[2:]).unlink(missing_ok=True)

    with pytest.raises(ExternalServiceError, match=r"The registry data/registry/images of dataset version 'data/demo/v1' is in neither"):
        read_registry_at(project, Path("data/registry/images"), "data/demo/v1")
    result = kedro_cli(project, "run", "--pipelines", "export", "--params", "dataset_version=data/demo/v1")
    assert result.exit_code == 3, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "is in neither the DVC cache nor the DVC remote" in errors[0]
    assert "Traceback" not in result.output


def test_an_untagged_snapshot_commit_that_came_with_a_clone_is_not_tagged_there(project, tmp_path, caplog):
    add_images(project, range(10))
    pushed = snapshot(project)
    git(project, "tag", "-d", pushed.tag)  # pushed without its tag (or a repository that carries one)
    clone = tmp_path / "clone"  # beside the project: the same relative remote
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    for key, value in (("user.name", "cv-tests"), ("user.email", "tests@localhost")):
        git(clone, "config", key, value)

    with caplog.at_level("INFO", logger="cv_pipelines.versioning.dataset_versions"):
        add_images(clone, range(100, 103))
        snapshot(clone)
    assert git(clone, "tag", "--points-at", pushed.commit) == ""  # its data never was in this clone
    assert "Not tagging data/demo/v1" in caplog.text and "not in this clone's DVC cache" in caplog.text

    # Where the snapshot was made (its objects in the cache), the same commit is tagged, as before.
    add_images(project, range(200, 201))
    snapshot(project)
    assert git(project, "tag", "--points-at", pushed.commit) == "data/demo/v1"
