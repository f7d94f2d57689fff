"""Dataset versions: DVC snapshots of the store and registries, git commits and tags.

A snapshot tracks the image store in shards (one ``.dvc`` pointer per top-level hash
prefix, ``data/store/images/ab.dvc``) and each registry folder with its own pointer,
re-adds only what changed since the last snapshot (told by directory modification
times: a new image touches its ``ab/cd/`` folder, and only those folders of a shard are
re-added when they are few), makes sure the DVC remote holds every listing the version
points to (pushing what a re-added listing gained, or all of a listing the remote lacks),
commits only the pointer files, and tags the commit ``data/<label_set>/v<N>``. Its cost
follows the batch and the number of shards, not the size of the store. Killed at any
step, the next snapshot finishes the same version once (see `snapshot_dataset`).

Reading a version never touches the working tree: registries are read through DVC's
file system at the tag (``DVCFileSystem(rev=...)``), and an image missing from the
store is fetched from the DVC remote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cv_pipelines.files.atomic import write_atomically_with, write_bytes_atomically, write_text_atomically

logger = logging.getLogger(__name__)

#: Registry folders under the registry root that make up a dataset version.
VERSIONED_REGISTRIES = ("images", "rejections", "annotations", "labels", "exclusions", "batches", "label_sets")
_STATE_FILE = "cv_pipelines_snapshot_state.json"  # under .dvc/tmp: per working tree, not in git
_STATE_FORMAT = 2  # 2: written after the tag, with the commit it belongs to
#: The trailer of a snapshot commit naming the tag it gets: a snapshot killed between its
#: commit and its tag is tagged by the next one.
VERSION_TRAILER = "Dataset-Version"
_INTERRUPTED_LOOKBACK = 50  # commits of HEAD's history searched for a snapshot commit left untagged
#: Most sub-folders of one tracked folder re-added one by one; above it the folder is
#: re-added whole. A granular add costs about a quarter of a whole store shard at 100,000
#: images (it rewrites the shard's listing each time), so few new images per shard (a
#: usual batch) go sub-folder by sub-folder and a big batch shard by shard.
GRANULAR_ADD_MAX = 4


class SnapshotError(RuntimeError):
    """The repository is in a state a snapshot cannot commit from; the message says which."""


@dataclass
class SnapshotResult:
    """What a snapshot did: the commit and tag it made (``committed``), or why it made none (``message``)."""

    committed: bool
    tag: str | None = None
    commit: str | None = None
    changed_targets: list[str] = field(default_factory=list)
    message: str = ""

    def summary(self) -> str:
        """One line for the log: the tag, short commit and pointer files updated, or why nothing was committed."""
        if not self.committed:
            return self.message or "nothing changed since the last snapshot; no commit, no tag"
        return f"{self.tag} at {(self.commit or '?')[:10]}: {len(self.changed_targets)} pointer file(s) updated"


@dataclass(frozen=True)
class ResolvedVersion:
    """What a dataset version (a tag or any git revision, or None for the working tree) is."""

    dataset_version: str | None
    commit: str | None
    registries_hash: str


# --- git ---------------------------------------------------------------------------------


def _git(root: Path, *args: str, check: bool = True) -> str:
    completed = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if check and completed.returncode != 0:
        raise SnapshotError(f"git {' '.join(args)} failed in {root}: {completed.stderr.strip()}")
    return completed.stdout.strip()


def check_can_commit(root: Path) -> None:
    """Refuse, with the reason, a repository a snapshot must not commit into."""
    if _git(root, "rev-parse", "--is-inside-work-tree", check=False) != "true":
        raise SnapshotError(f"{root} is not a git repository; run `git init` (and commit the project) first.")
    git_dir = Path(_git(root, "rev-parse", "--absolute-git-dir"))
    for marker, what in (
        ("MERGE_HEAD", "a merge"),
        ("rebase-merge", "a rebase"),
        ("rebase-apply", "a rebase or am"),
        ("CHERRY_PICK_HEAD", "a cherry-pick"),
        ("REVERT_HEAD", "a revert"),
    ):
        if (git_dir / marker).exists():
            raise SnapshotError(f"The repository is in the middle of {what}; finish or abort it, then snapshot again.")
    if _git(root, "symbolic-ref", "-q", "HEAD", check=False) == "":
        raise SnapshotError(
            "HEAD is detached; check out a branch so the snapshot commit is not lost, then snapshot again."
        )
    if not _git(root, "config", "user.email", check=False):
        raise SnapshotError(
            "git has no user.email configured; set it (git config user.email ...) so the snapshot can be committed."
        )


def current_commit(root: Path, rev: str = "HEAD") -> str | None:
    """The full commit hash ``rev`` (a tag, branch or hash) names in the repository at ``root``, or None."""
    out = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
    return out or None


def next_version_tag(root: Path, label_set: str) -> str:
    """``data/<label_set>/v<N>``, N one above the highest version tagged for the label set (1 for the first)."""
    tags = _git(root, "tag", "--list", f"data/{label_set}/v*").splitlines()
    numbers = [int(m.group(1)) for t in tags if (m := re.fullmatch(rf"data/{re.escape(label_set)}/v(\d+)", t))]
    return f"data/{label_set}/v{max(numbers, default=0) + 1}"


# --- what changed --------------------------------------------------------------------


def _folder_stamp(folder: Path) -> dict:
    """Modification times of a folder, of its sub-folders (a store shard's ``cd/`` folders)
    and of the files directly in it (a registry's parts), and a digest of the folder's
    ``.dvc`` pointer. No file below the sub-folders is listed, and none is opened or hashed."""
    dirs, files = {}, {}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                dirs[entry.name] = entry.stat(follow_symlinks=False).st_mtime_ns
            elif entry.is_file():
                files[entry.name] = entry.stat().st_mtime_ns
    try:
        pointer = hashlib.sha256(folder.with_name(folder.name + ".dvc").read_bytes()).hexdigest()
    except FileNotFoundError:
        pointer = None
    return {"mtime": os.stat(folder).st_mtime_ns, "dirs": dirs, "files": files, "pointer": pointer}


def _load_state(root: Path) -> dict:
    """The folder stamps the last finished snapshot recorded, or {} (everything is re-added).

    The state is written only once a snapshot's version is committed and tagged (or found
    to need no commit), and names the commit it was written at: a state from an older
    format, or whose commit is no longer in HEAD's history (a reset), is not trusted.
    """
    path = root / ".dvc" / "tmp" / _STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    commit = state.get("commit") if isinstance(state, dict) and state.get("format") == _STATE_FORMAT else None
    if not commit or not _is_ancestor_of_head(root, commit):
        return {}
    return state.get("targets") or {}


def _save_state(root: Path, targets: dict, commit: str | None = None) -> None:
    """The stamps of ``targets`` as of ``commit`` (None: HEAD's, looked up)."""
    path = root / ".dvc" / "tmp" / _STATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": _STATE_FORMAT, "commit": commit or current_commit(root), "targets": targets}
    write_text_atomically(path, json.dumps(state), durable=False)  # a cache: losing it costs one full re-add


def _is_ancestor_of_head(root: Path, commit: str) -> bool:
    completed = subprocess.run(
        ["git", "merge-base", "--is-ancestor", commit, "HEAD"], cwd=root, capture_output=True, check=False
    )
    return completed.returncode == 0


def snapshot_targets(root: Path, store_dir: Path, registry_dir: Path) -> list[Path]:
    """Every folder a snapshot tracks: the store's shards and the registry folders."""
    targets = []
    store = root / store_dir
    if store.exists():
        targets += sorted(p for p in store.iterdir() if p.is_dir() and re.fullmatch(r"[0-9a-f]{2}", p.name))
    targets += [root / registry_dir / name for name in VERSIONED_REGISTRIES if (root / registry_dir / name).exists()]
    return targets


@dataclass(frozen=True)
class TargetChange:
    """A tracked folder that changed since the last snapshot, and what `dvc add` re-adds of it."""

    target: Path
    #: The folder itself, or only its new and changed sub-folders: DVC then rebuilds just
    #: those and splices them into the folder's previous listing (a granular `dvc add`).
    add_paths: tuple[Path, ...]


def _what_to_add(target: Path, before: dict | None, now: dict) -> tuple[Path, ...]:
    """The paths to re-add for a target whose stamp went from ``before`` to ``now``."""
    if (
        not isinstance(before, dict)  # first snapshot, lost state, or an older state format
        or now["pointer"] is None
        or before.get("pointer") != now["pointer"]  # the pointer changed (git checkout, dvc add): trust nothing
        or before.get("files") != now["files"]
        or not set(before.get("dirs", {})) <= set(now["dirs"])  # a sub-folder went away
    ):
        return (target,)
    # The pointer still lists the folder as it was at ``before``, and a new or removed
    # image changes its ``cd/`` folder's time. Re-adding a sub-folder replaces all its
    # entries in the listing, so re-adding the changed ones gives the listing a whole
    # re-add would give, at the cost of their few files instead of the whole shard's.
    changed = tuple(target / name for name, mtime in sorted(now["dirs"].items()) if before["dirs"].get(name) != mtime)
    if not changed or len(changed) > GRANULAR_ADD_MAX:
        return (target,)  # only the folder's own time moved, or a big batch: re-add it whole
    return changed


def changed_targets(root: Path, targets: list[Path], state: dict) -> tuple[list[TargetChange], dict]:
    """Targets whose folders or pointers changed since the last snapshot, or that have no
    pointer yet, with what to re-add of each; and every target's current stamp."""
    changes, stamps = [], {}
    for target in targets:
        key = target.relative_to(root).as_posix()
        stamps[key] = now = _folder_stamp(target)
        if state.get(key) != now:
            changes.append(TargetChange(target, _what_to_add(target, state.get(key), now)))
    return changes, stamps


# --- snapshot -------------------------------------------------------------------------


def _pointer_output(pointer: Path) -> dict | None:
    """The one output of a whole ``.dvc`` file (a path and a hash), or None: missing, empty or cut."""
    import yaml

    try:
        output = yaml.safe_load(pointer.read_text()).get("outs")[0]
        return output if output["path"] and output["md5"] else None
    except (OSError, yaml.YAMLError, AttributeError, LookupError, TypeError, UnicodeDecodeError):
        return None


def _is_whole_pointer(pointer: Path) -> bool:
    """Whether ``pointer`` parses as a single-output ``.dvc`` file with a path and a hash."""
    return _pointer_output(pointer) is not None


def _repair_torn_pointers(root: Path, pointers: list[Path]) -> None:
    """Put back, from HEAD (or remove, when HEAD has none), pointers a kill left half-written.

    DVC writes a ``.dvc`` file in place, so a kill can leave it empty or cut; DVC then
    refuses to load the repository at all. The target is re-added whole afterwards (its
    pointer's digest no longer matches the state).
    """
    for pointer in pointers:
        if not pointer.exists() or _is_whole_pointer(pointer):
            continue
        relative = pointer.relative_to(root).as_posix()
        committed = subprocess.run(["git", "show", f"HEAD:{relative}"], cwd=root, capture_output=True, check=False)
        if committed.returncode == 0:
            write_bytes_atomically(pointer, committed.stdout, durable=False)
        else:
            pointer.unlink()
        logger.warning("%s was half-written (a snapshot was killed while DVC wrote it); re-adding its folder", relative)


def pointed_object(pointer: Path):
    """The object (a ``.dir`` listing for a folder) a single-output ``.dvc`` file names, or None."""
    from dvc_data.hashfile.hash_info import HashInfo

    output = _pointer_output(pointer)
    if output is None:
        return None
    # DVC 3 writes ``hash: md5``; a pointer without it uses DVC 2's md5-dos2unix objects.
    return HashInfo(output.get("hash", "md5-dos2unix"), output["md5"])


def objects_to_push(cache, remote_odb, pointers) -> list:
    """The objects a snapshot uploads so that every listing its version points to is on the
    remote with all its files: nothing for a listing already there; for another, the files
    its previous listing did not have (when that one is on the remote) or all its files
    (when it is not: a new target, a remote that lost objects or a remote never pushed to),
    then the listing itself.

    ``pointers`` pairs each tracked target's object before and after `dvc add` (the same
    object twice for a target that did not change). A ``.dir`` listing on the remote means
    every file it lists is there too: DVC uploads a listing only after all its files (the
    rule `dvc push` relies on with its remote index). Checking that costs one existence
    query per target, never a listing of the remote, so the cost follows the shards, not
    the images. (`dvc push` of the pointers instead collects every file of every listing
    into its data index: its cost grows with the store and the history.)
    """
    from dvc_data.hashfile.tree import Tree

    listings = {obj.value for pair in pointers for obj in pair if obj is not None}
    on_remote = set(remote_odb.list_oids_exists(listings)) if listings else set()
    objects = []
    for old, new in pointers:
        if new is None or new.value in on_remote:
            continue
        if new.isdir:
            try:
                files = {oid for _, _, oid in Tree.load(cache, new)}
            except FileNotFoundError:
                files = set()  # the listing is nowhere: the transfer's status check reports it
            if old is not None and old.isdir and old.value in on_remote:  # new's is not: they differ
                with contextlib.suppress(FileNotFoundError):  # no longer in the local cache: push it all
                    files -= {oid for _, _, oid in Tree.load(cache, old)}
            objects += sorted(files, key=lambda h: h.value)
        objects.append(new)  # after its files: a listing is uploaded last
    return objects


class _TransferErrors(logging.Filter):
    """Keeps DVC's per-object transfer errors (logged with their tracebacks) out of the log, and the first reason."""

    LOGGERS = ("dvc_data.hashfile.transfer", "dvc_objects.fs.generic")

    def __init__(self) -> None:
        super().__init__()
        self.first: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.first is None and record.exc_info and record.exc_info[1] is not None:
            self.first = str(record.exc_info[1]) or type(record.exc_info[1]).__name__
        return False

    @contextlib.contextmanager
    def installed(self):
        loggers = [logging.getLogger(name) for name in self.LOGGERS]
        for each in loggers:
            each.addFilter(self)
        try:
            yield self
        finally:
            for each in loggers:
                each.removeFilter(self)


def push_version_objects(
    repo, pointer_files: list[Path], before: dict[Path, object], remote: str | None = None
) -> None:
    """Make sure the DVC remote holds every object the pointers name (see `objects_to_push`).

    ``before`` maps each re-added pointer to the object it named before `dvc add`.

    Raises:
        SnapshotError: no remote is configured, or an object is neither in the cache nor on the remote.
        ExternalServiceError: the remote cannot be written or reached (one sentence naming it and the fix).
    """
    from dvc.config import NoRemoteError
    from dvc_data.hashfile.transfer import transfer

    try:
        dvc_remote = repo.cloud.get_remote(remote, "push")
    except NoRemoteError:
        raise SnapshotError(
            f"No DVC remote {'named ' + repr(remote) if remote else 'is configured'} to push the snapshot to; "
            "add one (dvc remote add -d <name> <url>) or set snapshot.push to false, then snapshot again."
        ) from None
    cache = repo.cache.local
    after = {p: pointed_object(p) for p in pointer_files}
    pairs = [(before.get(p, new), new) for p, new in after.items()]
    errors = _TransferErrors()
    try:
        with errors.installed():
            if (
                dvc_remote.worktree
                or dvc_remote.fs.version_aware
                or any(new is not None and new.name != cache.hash_name for _, new in pairs)
            ):
                # A cloud-versioned remote (DVC records the versions in the pointers), or objects
                # of another hash kind: leave it all to `dvc push`.
                repo.push(targets=[str(p) for p in pointer_files], remote=remote)
                return
            odb = repo.cloud.get_remote_odb(remote, "push")
            result = transfer(
                cache, odb, objects_to_push(cache, odb, pairs), cache_odb=cache, validate_status=_refuse_missing
            )
    except SnapshotError:
        raise
    except Exception as exc:  # OSError, DVC's errors, and whatever the remote's client raises
        raise _remote_error(dvc_remote, errors.first or str(exc) or type(exc).__name__) from None
    if result.failed:
        raise _remote_error(dvc_remote, errors.first or f"{len(result.failed)} object(s) failed to upload")


def _refuse_missing(status) -> None:
    if status.missing:
        names = ", ".join(sorted(h.value for h in status.missing)[:5])
        raise SnapshotError(f"{len(status.missing)} object(s) are neither in the DVC cache nor on the remote: {names}")


#: What an object store answers to keys it does not know or a signature that does not match.
_REFUSED_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403")


def _remote_error(dvc_remote, reason: str):
    from cv_pipelines.errors import ExternalServiceError

    reason = reason.rstrip(".")
    if any(word in reason for word in _REFUSED_CREDENTIALS):
        # DVC's own configuration holds the keys (never committed: its --local level).
        fix = (
            f"it refused the credentials: set the right keys with `dvc remote modify --local {dvc_remote.name} "
            f"access_key_id <key id>` and `... secret_access_key <secret>` (or AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY)"
        )
    else:
        fix = f"make the remote writable (or point it elsewhere: dvc remote modify {dvc_remote.name} url <url>)"
    return ExternalServiceError(
        f"The DVC remote {dvc_remote.name!r} ({dvc_remote.path}) could not be written ({reason}), so no dataset "
        f"version was committed or tagged and the pointer files are as they were; {fix}, then snapshot again."
    )


def _pointer(target: Path) -> Path:
    return target.with_name(target.name + ".dvc")


def _made_here(root: Path, commit: str) -> bool:
    """Whether every listing the snapshot ``commit``'s pointer files name is in this clone's DVC cache.

    A snapshot `dvc add`s into the cache before it commits, so one killed here always passes.
    """
    import yaml
    from dvc.config import Config

    cache_dir = Config(dvc_dir=str(root / ".dvc"), validate=False).get("cache", {}).get("dir")
    cache = (root / ".dvc" / cache_dir).resolve() if cache_dir else root / ".dvc/cache"
    changed = _git(root, "show", "--name-only", "--format=", commit, check=False).splitlines()
    for name in (path for path in changed if path.endswith(".dvc")):
        try:
            output = yaml.safe_load(_git(root, "show", f"{commit}:{name}", check=False)).get("outs")[0]
            md5 = output["md5"]
        except (yaml.YAMLError, AttributeError, LookupError, TypeError):
            continue  # a pointer since removed or cut: nothing to find
        folder = cache / "files/md5" if output.get("hash") == "md5" else cache  # DVC 3's layout, or DVC 2's
        if not (folder / md5[:2] / md5[2:]).exists():
            return False
    return True


def _tag_interrupted_version(root: Path) -> tuple[str, str] | None:
    """Tag the snapshot commits among HEAD's last few whose tag was never made (a snapshot killed
    between its commit and its tag, maybe followed by commits of the user's); returns the
    newest such tag and commit, or None when none needed a tag."""
    log = _git(
        root,
        "log",
        f"-{_INTERRUPTED_LOOKBACK}",
        f"--format=%H %(trailers:key={VERSION_TRAILER},valueonly,separator=%x20)",
        "HEAD",
        check=False,
    )
    wanted = [(tag, commit) for commit, _, tag in (line.partition(" ") for line in log.splitlines()) if tag]
    existing = set(_git(root, "tag", "--list", "data/*").splitlines()) if wanted else set()
    newest = None
    for tag, commit in reversed(wanted):  # oldest first
        if tag in existing:
            continue
        if not _made_here(root, commit):
            # A snapshot commit that came with the clone (one pushed without its tag, or a
            # product repository that carries one): tagging it would name data this clone
            # never had. Its author's next snapshot tags it.
            logger.info("Not tagging %s at %s: its data is not in this clone's DVC cache", tag, commit[:10])
            continue
        subject = _git(root, "log", "-1", "--format=%s", commit)
        _git(root, "tag", "-a", tag, "-m", f"Dataset version {tag}: {subject}", commit)
        logger.info("Tagged %s at %s: the snapshot that committed it stopped before its tag", tag, commit[:10])
        newest = (tag, commit)
    return newest


def _not_committed(root: Path, paths: list[str]) -> list[str]:
    """Those of ``paths`` whose working-tree or staged content differs from HEAD (untracked ones too):
    pointers an interrupted snapshot re-added but never committed."""
    if not paths:
        return []
    status = ["git", "status", "--porcelain", "-z", "--untracked-files=all", "--", *paths]
    out = subprocess.run(status, cwd=root, capture_output=True, text=True, check=True).stdout  # not stripped: "XY path"
    return sorted({entry[3:] for entry in out.split("\0") if entry})


@contextlib.contextmanager
def _restored_if_failed(files: list[Path]):
    """Put ``files`` back as they were (absent ones removed) if the block raises."""
    saved = {path: path.read_bytes() if path.exists() else None for path in files}
    try:
        yield
    except BaseException:
        for path, data in saved.items():
            if data is None:
                path.unlink(missing_ok=True)
            elif not path.exists() or path.read_bytes() != data:
                write_bytes_atomically(path, data, durable=False)
        raise


def _add_changed(root: Path, changes: list[TargetChange], pointer_files: list[Path], push: bool, remote: str | None):
    """`dvc add` what changed and push what the remote lacks; returns the re-added targets' new stamps."""
    from dvc.repo import Repo

    repo = Repo(str(root))
    repo.scm_context.quiet = True  # we stage and commit the pointers ourselves
    try:
        before = {_pointer(c.target): pointed_object(_pointer(c.target)) for c in changes}
        add_paths: list[Path] = []
        for change in changes:
            # A granular add splices sub-folders into the previous listing, which must be
            # in the cache (DVC would otherwise try to pull it).
            old = before[_pointer(change.target)]
            in_cache = old is not None and repo.cache.local.exists(old.value)
            add_paths += change.add_paths if in_cache else [change.target]
        if add_paths:
            repo.add([str(path) for path in add_paths])
        if push:
            push_version_objects(repo, pointer_files, before, remote=remote)
    finally:
        repo.close()
    # Stamped after `dvc add`: with a link cache it re-links the files it added, which
    # touches their folders, and it rewrites the pointers.
    return {c.target.relative_to(root).as_posix(): _folder_stamp(c.target) for c in changes}


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
    """DVC-track what changed, push what the remote lacks, commit only the pointer files, tag the commit.

    Killed at any step, the next snapshot finishes the same version, once: the state of
    what was added is written only after the tag, pointers re-added but never committed
    are committed, and a snapshot commit left without its tag is tagged. A remote that
    cannot be written stops it before the commit, with the pointer files put back.

    Raises:
        SnapshotError: git or DVC is in a state a snapshot cannot commit from.
        ExternalServiceError: the DVC remote could not be written.
    """
    from cv_pipelines.registries.writer_lock import writer_lock

    root = Path(root).resolve()
    check_can_commit(root)
    targets = snapshot_targets(root, store_dir, registry_dir)
    if not targets:
        return SnapshotResult(committed=False, message="the store and registries are empty; nothing to snapshot")
    (root / registry_dir).mkdir(parents=True, exist_ok=True)
    # Held to the end: no ingestion or pull may change the store or registries between what
    # DVC hashes and the folder times recorded, nor a second snapshot commit the same pointers.
    with writer_lock(root / registry_dir, timeout_s=lock_timeout_s):
        interrupted = _tag_interrupted_version(root)
        changes, stamps = changed_targets(root, targets, _load_state(root))
        pointer_files = [_pointer(t) for t in targets]
        _repair_torn_pointers(root, pointer_files)
        ignores = sorted({t.parent / ".gitignore" for t in targets})
        if changes or push:
            with _restored_if_failed([_pointer(c.target) for c in changes] + ignores):
                stamps |= _add_changed(root, changes, pointer_files, push, remote)
        tracked = [p.relative_to(root).as_posix() for p in [*pointer_files, *ignores] if p.exists()]
        paths = _not_committed(root, tracked)
        if paths:
            _git(root, "add", "--", *paths)
        # Only these paths: whatever else the user has staged stays staged and uncommitted.
        if not paths or not _git(root, "diff", "--cached", "--name-only", "--", *paths):
            _save_state(root, stamps)
            if interrupted:
                tag, commit = interrupted
                return SnapshotResult(committed=True, tag=tag, commit=commit, message="tagged an interrupted snapshot")
            return SnapshotResult(committed=False, message="nothing changed since the last snapshot; no commit, no tag")
        tag = next_version_tag(root, label_set)
        _git(
            root,
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            f"{message}\n\n{VERSION_TRAILER}: {tag}",
            "--only",
            "--",
            *paths,
        )
        commit = _git(root, "rev-parse", "--verify", "HEAD^{commit}")  # the commit just made; raises if unreadable
        _git(root, "tag", "-a", tag, "-m", f"Dataset version {tag}: {message}", commit)
        _save_state(root, stamps, commit)
    return SnapshotResult(committed=True, tag=tag, commit=commit, changed_targets=paths)


# --- reading a version -----------------------------------------------------------------


def check_dataset_version(root: Path, rev: str) -> None:
    """Refuse, with one sentence, a dataset version that names no tag or revision of the repository at ``root``.

    Raises:
        ConfigurationError: ``rev`` names nothing in the repository.
    """
    from cv_pipelines.errors import ConfigurationError

    if current_commit(Path(root), rev) is None:
        raise ConfigurationError(
            f"dataset_version {rev!r} is not a tag or revision of this project's git repository; list the "
            "dataset versions with `git tag -l 'data/*'` and pass one of them (--params dataset_version=<tag>)."
        )


def _open_fs(root: Path, rev: str | None):
    if rev is None:
        return None
    from dvc.api import DVCFileSystem

    check_dataset_version(root, rev)
    return DVCFileSystem(str(root), rev=rev)


def read_registry_at(root: Path, registry: Path, rev: str | None) -> pd.DataFrame:
    """A registry as of ``rev`` (None: the working tree), without touching the working tree."""
    from cv_pipelines.registries import parts as registry_parts

    root = Path(root).resolve()
    if rev is None:
        return registry_parts.read_registry(root / registry)
    folder = Path(registry).relative_to(root) if Path(registry).is_absolute() else Path(registry)
    from dvc_data.index.index import DataIndexDirError

    from cv_pipelines.errors import ExternalServiceError

    try:
        return registry_parts.read_registry(folder, fs=_open_fs(root, rev))
    except (FileNotFoundError, DataIndexDirError) as exc:  # a part, or its listing, is nowhere DVC can read
        missing = exc.filename if isinstance(exc, FileNotFoundError) and exc.filename else folder
        raise ExternalServiceError(
            f"The registry {folder} of dataset version {rev!r} is in neither the DVC cache nor the DVC remote "
            f"({missing} is missing); push it from a clone that still has it (dvc push), or use another "
            "dataset version."
        ) from exc


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
    """``rev`` (None: the working tree, at ``HEAD``) with its commit and the content hash of ``frames``."""
    return ResolvedVersion(
        dataset_version=rev,
        commit=current_commit(Path(root), rev or "HEAD"),
        registries_hash=registries_content_hash(frames),
    )


def ensure_images_present(root: Path, paths: list[str], rev: str | None) -> int:
    """Fetch stored images missing from the working tree from DVC (cache or remote); returns how many.

    Raises:
        ExternalServiceError: some are in neither the DVC cache nor the remote (one sentence, naming the first).
    """
    root = Path(root).resolve()
    missing = [p for p in paths if not (root / p).exists()]
    if not missing:
        return 0  # the usual case, on every export load: no DVC import
    from dvc_data.index.index import DataIndexDirError

    from cv_pipelines.errors import ExternalServiceError

    fs = _open_fs(root, rev or "HEAD")
    lost = []
    for path in missing:
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_atomically_with(target, _fetcher(fs, path), durable=False, suffix=".fetching")
        except (FileNotFoundError, DataIndexDirError):  # the image, or its shard's listing, is nowhere
            lost.append(path)
            continue
        os.chmod(target, 0o444)
    if lost:
        raise ExternalServiceError(
            f"{len(lost)} image(s) of dataset version {rev or 'HEAD'!r} are in neither the store, the DVC cache "
            f"nor the DVC remote (the first: {lost[0]}); push them from a clone that still has them "
            "(dvc push), or use another dataset version."
        )
    logger.info("Fetched %d image(s) missing from the store from DVC", len(missing))
    return len(missing)


def _fetcher(fs, path: str):
    def fetch(tmp: Path) -> None:
        fs.get_file(path, str(tmp))

    return fetch
