"""kill -9 a real snapshot right before and right after each of its steps: the next one makes the version once."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from cv_pipelines.images.ingestion import read_images_registry
from cv_pipelines.versioning.dataset_versions import read_registry_at
from tests.conftest import project_env
from tests.test_dataset_versions import add_images, git, snapshot

#: The snapshot, in a process of its own, with one step wrapped so that the process
#: SIGKILLs itself right before or right after it: no finally block, no cleanup runs.
KILLED_SNAPSHOT = """
import os, signal, sys
from pathlib import Path
import dvc_data.hashfile.transfer
from dvc.repo import Repo
from cv_pipelines.versioning import dataset_versions

root, step, when = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

def aimed(function, hits=lambda *args, **kwargs: True):
    def wrapper(*args, **kwargs):
        hit = hits(*args, **kwargs)
        if hit and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = function(*args, **kwargs)
        if hit and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    return wrapper

if step == "state":
    dataset_versions._save_state = aimed(dataset_versions._save_state)
elif step == "dvc add":
    Repo.add = aimed(Repo.add)
elif step == "push":
    dvc_data.hashfile.transfer.transfer = aimed(dvc_data.hashfile.transfer.transfer)
else:  # "git add", "git commit", "git tag" (the tag it makes, not a listing of tags)
    command = step.split()[1]
    dataset_versions._git = aimed(
        dataset_versions._git, lambda root, *args, **kwargs: args[0] == command and (command != "tag" or "-a" in args)
    )
dataset_versions.snapshot_dataset(
    root, store_dir=Path("data/store/images"), registry_dir=Path("data/registry"), label_set="demo", message="killed"
)
print("not killed", flush=True)
"""

STEPS = ("dvc add", "push", "git add", "git commit", "git tag", "state")
KILL_POINTS = [(step, when) for step in STEPS for when in ("before", "after")]


def dvc_status_cloud(root: Path) -> dict:
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return repo.status(cloud=True)


def test_a_snapshot_killed_before_or_after_any_step_is_finished_once_by_the_next(project):
    add_images(project, range(4))
    snapshot(project)
    seeds = iter(range(100, 1000))
    for version, (step, when) in enumerate(KILL_POINTS, start=2):
        add_images(project, [next(seeds), next(seeds)])
        kill_snapshot(project, step, when)
        point = f"killed {when} {step}"

        snapshot(project)  # the rerun

        tags = [f"data/demo/v{n}" for n in range(1, version + 1)]
        assert sorted(git(project, "tag", "--list", "data/*").splitlines()) == sorted(tags), point
        commits = git(project, "log", "--format=%H", "--", "data").splitlines()  # the commits of the pointers
        tagged = {git(project, "rev-parse", f"{tag}^{{commit}}") for tag in tags}
        assert len(commits) == version and set(commits) == tagged, f"{point}: one commit per version, each tagged"
        at_tag = read_registry_at(project, Path("data/registry/images"), tags[-1])
        assert sorted(at_tag["image_id"]) == sorted(read_images_registry(project / "data/registry")["image_id"]), point
        assert git(project, "status", "--porcelain") == "", point
        assert dvc_status_cloud(project) == {}, point
    print(f"{len(KILL_POINTS)} kill points, 1 trial each: 0 versions lost, 0 duplicated")


def kill_snapshot(root: Path, step: str, when: str) -> None:
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_SNAPSHOT, str(root), step, when],
        env=project_env(root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, f"killed {when} {step}: {killed.stdout}{killed.stderr}"


def test_a_version_committed_but_never_tagged_is_tagged_even_under_later_commits(project):
    add_images(project, range(3))
    kill_snapshot(project, "git tag", "before")
    untagged = git(project, "rev-parse", "HEAD")
    (project / "notes.txt").write_text("the user's own work, committed before the next snapshot")
    git(project, "add", "notes.txt")
    git(project, "commit", "-q", "-m", "the user's commit")
    add_images(project, range(10, 12))

    assert snapshot(project).tag == "data/demo/v2"
    assert git(project, "rev-parse", "data/demo/v1^{commit}") == untagged
    assert git(project, "status", "--porcelain") == ""


def test_a_pointer_a_kill_left_half_written_is_repaired_and_re_added(project):
    """DVC writes a ``.dvc`` file in place: a kill inside that write leaves it empty or cut, and DVC
    then refuses to load the repository at all."""
    add_images(project, range(6))
    snapshot(project)
    add_images(project, range(20, 22))
    shards = sorted((project / "data/store/images").glob("*.dvc"))
    shards[0].write_text("")  # killed between the truncation and the write
    cut = shards[1].read_text()
    shards[1].write_text(cut[: len(cut) // 2])  # killed inside the write
    (project / "data/registry/images.dvc").write_text("outs:\n- md5: 0")

    assert snapshot(project).tag == "data/demo/v2"
    assert git(project, "status", "--porcelain") == ""
    assert dvc_status_cloud(project) == {}
    at_v2 = read_registry_at(project, Path("data/registry/images"), "data/demo/v2")
    assert len(at_v2) == 8
