"""Dataset versions: DVC snapshots of the store and registries, git commits and tags.

A snapshot tracks the image store in shards (one ``.dvc`` pointer per top-level hash
prefix, ``data/store/images/ab.dvc``) and each registry folder with its own pointer,
re-adds only what changed since the last snapshot (told by directory modification
times: the store is append-only, so a new image always touches its shard's folders),
pushes to the DVC remote, commits only the pointer files, and tags the commit
``data/<label_set>/v<N>``.

Reading a version never touches the working tree: registries are read through DVC's
file system at the tag (``DVCFileSystem(rev=...)``), and an image missing from the
store is fetched from the DVC remote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cv_pipelines.atomic_files import write_text_atomically

logger = logging.getLogger(__name__)

#: Registry folders under the registry root that make up a dataset version.
VERSIONED_REGISTRIES = ("images", "rejections", "annotations", "labels", "exclusions", "batches")
_STATE_FILE = "cv_pipelines_snapshot_state.json"  # under .dvc/tmp: per working tree, not in git


class SnapshotError(RuntimeError):
    """The repository is in a state a snapshot cannot commit from; the message says which."""


@dataclass
class SnapshotResult:
    committed: bool
    tag: str | None = None
    commit: str | None = None
    changed_targets: list[str] = field(default_factory=list)
    message: str = ""

    def summary(self) -> str:
        if not self.committed:
            return self.message or "nothing changed since the last snapshot; no commit, no tag"
        return f"{self.tag} at {self.commit[:10]}: {len(self.changed_targets)} pointer file(s) updated"


@dataclass(frozen=True)
class ResolvedVersion:
    """What a dataset version (a tag or any git revision, or None for the working tree) is."""

    dataset_version: str | None
    commit: str | None
    registries_hash: str


# --- git ---------------------------------------------------------------------------------


def _git(root: Path, *args: str, check: bool = True) -> str:
    completed = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and completed.returncode != 0:
        raise SnapshotError(f"git {' '.join(args)} failed in {root}: {completed.stderr.strip()}")
    return completed.stdout.strip()


def check_can_commit(root: Path) -> None:
    """Refuse, with the reason, a repository a snapshot must not commit into."""
    if _git(root, "rev-parse", "--is-inside-work-tree", check=False) != "true":
        raise SnapshotError(f"{root} is not a git repository; run `git init` (and commit the project) first.")
    git_dir = Path(_git(root, "rev-parse", "--absolute-git-dir"))
    for marker, what in (
        ("MERGE_HEAD", "a merge"), ("rebase-merge", "a rebase"), ("rebase-apply", "a rebase or am"),
        ("CHERRY_PICK_HEAD", "a cherry-pick"), ("REVERT_HEAD", "a revert"),
    ):
        if (git_dir / marker).exists():
            raise SnapshotError(f"The repository is in the middle of {what}; finish or abort it, then snapshot again.")
    if _git(root, "symbolic-ref", "-q", "HEAD", check=False) == "":
        raise SnapshotError("HEAD is detached; check out a branch so the snapshot commit is not lost, then snapshot again.")
    if not _git(root, "config", "user.email", check=False):
        raise SnapshotError("git has no user.email configured; set it (git config user.email ...) so the snapshot can be committed.")


def current_commit(root: Path, rev: str = "HEAD") -> str | None:
    out = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return out or None


def next_version_tag(root: Path, label_set: str) -> str:
    tags = _git(root, "tag", "--list", f"data/{label_set}/v*").splitlines()
    numbers = [int(m.group(1)) for t in tags if (m := re.fullmatch(rf"data/{re.escape(label_set)}/v(\d+)", t))]
    return f"data/{label_set}/v{max(numbers, default=0) + 1}"


# --- what changed --------------------------------------------------------------------


def _tree_stamp(folder: Path) -> list[int]:
    """Modification times of a folder and its sub-folders, two levels deep (a store shard
    and its ``cd/`` folders). No file is listed, opened or hashed."""
    stamps = [os.stat(folder).st_mtime_ns]
    with os.scandir(folder) as entries:
        children = sorted((e for e in entries if e.is_dir(follow_symlinks=False)), key=lambda e: e.name)
    for child in children:
        stamps.append(child.stat(follow_symlinks=False).st_mtime_ns)
    # Registry folders hold files directly: a new or replaced part changes the folder's
    # time, and a part rewritten in place (never done) would not, so also stamp the files.
    if not children:
        with os.scandir(folder) as entries:
            stamps.extend(sorted(e.stat().st_mtime_ns for e in entries if e.is_file()))
    return stamps


def _load_state(root: Path) -> dict:
    path = root / ".dvc" / "tmp" / _STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(root: Path, state: dict) -> None:
    path = root / ".dvc" / "tmp" / _STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, json.dumps(state), durable=False)  # a cache: losing it costs one full re-add


def snapshot_targets(root: Path, store_dir: Path, registry_dir: Path) -> list[Path]:
    """Every folder a snapshot tracks: the store's shards and the registry folders."""
    targets = []
    store = root / store_dir
    if store.exists():
        targets += sorted(p for p in store.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{2}", p.name))
    targets += [root / registry_dir / name for name in VERSIONED_REGISTRIES if (root / registry_dir / name).exists()]
    return targets


def changed_targets(root: Path, targets: list[Path], state: dict) -> tuple[list[Path], dict]:
    """Targets whose folders changed since the last snapshot, or that have no pointer yet."""
    changed, new_state = [], {}
    for target in targets:
        key = target.relative_to(root).as_posix()
        stamp = _tree_stamp(target)
        new_state[key] = stamp
        pointer = target.with_name(target.name + ".dvc")
        if state.get(key) != stamp or not pointer.exists():
            changed.append(target)
    return changed, new_state


# --- snapshot -------------------------------------------------------------------------


def snapshot_dataset(
    root: Path,
    *,
    store_dir: Path,
    registry_dir: Path,
    label_set: str,
    message: str,
    push: bool = True,
    remote: str | None = None,
    lock_timeout_s: float = 600.0,
) -> SnapshotResult:
    """DVC-track what changed, push it, commit only the pointer files, tag the commit."""
    from dvc.repo import Repo

    from cv_pipelines.ingest_images import writer_lock

    root = Path(root).resolve()
    check_can_commit(root)
    targets = snapshot_targets(root, store_dir, registry_dir)
    if not targets:
        return SnapshotResult(committed=False, message="the store and registries are empty; nothing to snapshot")
    (root / registry_dir).mkdir(parents=True, exist_ok=True)
    # No ingestion or pull may change the store or registries between what DVC hashes
    # and the folder times recorded for the next snapshot.
    with writer_lock(root / registry_dir, timeout_s=lock_timeout_s):
        changed, _ = changed_targets(root, targets, _load_state(root))
        repo = Repo(str(root))
        repo.scm_context.quiet = True  # we stage and commit the pointers ourselves
        try:
            if changed:
                repo.add([str(t) for t in changed])
            pointer_files = [t.with_name(t.name + ".dvc") for t in changed]
            if push and pointer_files:
                repo.push(targets=[str(p) for p in pointer_files], remote=remote)
        finally:
            repo.close()
        # Recorded after `dvc add`: with a link cache it re-links files, which touches
        # the folders it added.
        _, new_state = changed_targets(root, targets, {})
        _save_state(root, new_state)

    paths = [p.relative_to(root).as_posix() for p in pointer_files]
    paths += [
        p.relative_to(root).as_posix()
        for p in {t.parent / ".gitignore" for t in changed}
        if p.exists()
    ]
    if not paths:
        return SnapshotResult(committed=False, message="nothing changed since the last snapshot; no commit, no tag")
    _git(root, "add", "--", *paths)
    # Only these paths: whatever else the user has staged stays staged and uncommitted.
    if not _git(root, "diff", "--cached", "--name-only", "--", *paths):
        return SnapshotResult(committed=False, message="the DVC pointers did not change; no commit, no tag")
    _git(root, "commit", "--quiet", "--no-verify", "-m", message, "--only", "--", *paths)
    commit = current_commit(root)
    tag = next_version_tag(root, label_set)
    _git(root, "tag", "-a", tag, "-m", f"Dataset version {tag}: {message}", commit)
    return SnapshotResult(committed=True, tag=tag, commit=commit, changed_targets=paths)


# --- reading a version -----------------------------------------------------------------


def _open_fs(root: Path, rev: str | None):
    if rev is None:
        return None
    from dvc.api import DVCFileSystem

    if current_commit(root, rev) is None:
        raise SnapshotError(f"Dataset version {rev!r} is not a tag or revision of {root}; list versions with `git tag -l 'data/*'`.")
    return DVCFileSystem(str(root), rev=rev)


def read_registry_at(root: Path, registry: Path, rev: str | None) -> pd.DataFrame:
    """A registry as of ``rev`` (None: the working tree), without touching the working tree."""
    from cv_pipelines import registry_parts

    root = Path(root).resolve()
    if rev is None:
        return registry_parts.read_registry(root / registry)
    folder = Path(registry).relative_to(root) if Path(registry).is_absolute() else Path(registry)
    return registry_parts.read_registry(folder, fs=_open_fs(root, rev))


def registries_content_hash(frames: dict[str, pd.DataFrame]) -> str:
    """A hash of the registries' rows (order-independent), identical for identical content."""
    digest = hashlib.sha256()
    for name in sorted(frames):
        frame = frames[name]
        digest.update(name.encode())
        if frame.empty:
            continue
        ordered = frame.reindex(sorted(frame.columns), axis=1)
        rows = pd.util.hash_pandas_object(ordered.astype(str), index=False).sort_values()
        digest.update(rows.to_numpy().tobytes())
    return digest.hexdigest()


def resolve_version(root: Path, rev: str | None, frames: dict[str, pd.DataFrame]) -> ResolvedVersion:
    return ResolvedVersion(
        dataset_version=rev,
        commit=current_commit(Path(root), rev or "HEAD"),
        registries_hash=registries_content_hash(frames),
    )


def ensure_images_present(root: Path, paths: list[str], rev: str | None) -> int:
    """Fetch stored images missing from the working tree from DVC (cache or remote); returns how many."""
    root = Path(root).resolve()
    missing = [p for p in paths if not (root / p).exists()]
    if not missing:
        return 0
    fs = _open_fs(root, rev or "HEAD")
    for path in missing:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".fetching")
        fs.get_file(path, str(tmp))
        os.replace(tmp, target)
        os.chmod(target, 0o444)
    logger.info("Fetched %d image(s) missing from the store from DVC", len(missing))
    return len(missing)
