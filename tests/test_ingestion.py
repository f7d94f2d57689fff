"""Ingestion: store once by content, register once, quarantine the rest, never lose a file."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cv_pipelines.config.loader import section_parameters
from cv_pipelines.images.ingestion import (
    IngestionJob,
    IngestionLockedError,
    StoreLayout,
    ingest_images,
    read_images_registry,
    writer_lock,
)
from cv_pipelines.registries import parts as registry_parts
from tests.conftest import project_env, run_kedro, run_pipeline
from tests.support.cli import kedro_cli
from tests.support.images import image_bytes, png_with_declared_size, write
from tests.support.projects import copy_project, use_project


def layout_for(root: Path) -> StoreLayout:
    return StoreLayout(
        project_root=root,
        store_dir=Path("data/store/images"),
        registry_dir=Path("data/registry"),
        quarantine_dir=Path("data/quarantine"),
    )


def settings_for(root: Path, *, consume_source: bool = True, **overrides) -> IngestionJob:
    """The project's folders, as the catalog names them, and ``ingestion`` parameters for tests."""
    params = section_parameters("ingestion", **{"workers": 2, "show_progress": False, "lock_timeout_s": 5, **overrides})
    return IngestionJob(layout_for(root), Path("data/incoming"), params, consume_source=consume_source)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "data/store/images").rglob("*") if p.is_file())


def drop_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "data/incoming").rglob("*") if p.is_file())


@pytest.fixture
def mixed_drop(project: Path) -> dict[str, bytes]:
    """A drop with nested folders, odd-case extensions, duplicates and bad files."""
    incoming = project / "data/incoming"
    good = {
        "a.jpg": image_bytes(1),
        "nested/deeper/B.JPEG": image_bytes(2),
        "c.PNG": image_bytes(3, fmt="PNG"),
        "d.webp": image_bytes(4, fmt="WEBP"),
        "e.Bmp": image_bytes(5, fmt="BMP"),
        "f.tif": image_bytes(6, fmt="TIFF"),
        "rotated.jpg": image_bytes(7, size=(40, 30), exif_orientation=8),
    }
    bad = {
        "empty.jpg": b"",
        "notes.jpg": b"this is a text file with a jpg name\n",
        "cut.jpg": image_bytes(8, size=(64, 64))[:-300],
        "anim.gif": image_bytes(9, fmt="GIF"),
        "bomb.png": png_with_declared_size(50_000, 50_000),
        "readme.txt": b"not an image at all",
        "dot.png": image_bytes(10, size=(1, 1), fmt="PNG"),  # Ultralytics refuses sides under 10 px
        "thin.jpg": image_bytes(11, size=(9, 40)),
    }
    for name, data in {**good, **bad}.items():
        write(incoming / name, data)
    write(incoming / "copies/a_again.jpg", good["a.jpg"])  # same bytes, other name
    return {"good": good, "bad": bad}


def test_ingests_stores_once_and_quarantines_bad_input(project, mixed_drop):
    result = ingest_images(settings_for(project))

    good, bad = mixed_drop["good"], mixed_drop["bad"]
    assert (result.new, result.duplicates, result.rejected) == (len(good), 1, len(bad))
    registry = read_images_registry(project / "data/registry")
    assert sorted(registry["image_id"]) == sorted(sha(d) for d in good.values())
    for row in registry.itertuples():
        assert not Path(row.path).is_absolute()
        assert row.path == f"data/store/images/{row.image_id[:2]}/{row.image_id[2:4]}/{row.image_id}.{row.format}"
        assert hashlib.sha256((project / row.path).read_bytes()).hexdigest() == row.image_id
        assert row.source_id == "manual_upload"
        assert str(row.ingested_at.tz) == "UTC"
    rotated = registry.set_index("original_name").loc["rotated.jpg"]
    assert (rotated.width, rotated.height, rotated.exif_orientation) == (30, 40, 8)
    assert registry.set_index("original_path").loc["nested/deeper/B.JPEG", "format"] == "jpg"

    # The drop zone is cleared, nested folders included; nothing vanished.
    assert drop_files(project) == []
    assert len(store_files(project)) == len(good)
    rejections = registry_parts.read_registry(project / "data/registry/rejections")
    assert sorted(rejections["original_path"]) == sorted(bad)
    for row in rejections.itertuples():
        assert (project / row.quarantine_path).read_bytes() == bad[row.original_path]
        assert row.reason.startswith(f"{row.original_path}: ")
    reasons = rejections.set_index("original_path")["reason"]
    assert "empty" in reasons["empty.jpg"]
    assert "truncated JPEG" in reasons["cut.jpg"]
    assert "decompression bomb" in reasons["bomb.png"]
    assert "unsupported" in reasons["anim.gif"] and "unsupported" in reasons["readme.txt"]
    assert "1x1 pixels; Ultralytics trains only on images of at least 10x10" in reasons["dot.png"]
    assert "9x40 pixels" in reasons["thin.jpg"]

    report = result.report().set_index("original_path")
    assert report.loc["copies/a_again.jpg", "outcome"] == "duplicate_in_drop"
    assert "a.jpg" in report.loc["copies/a_again.jpg", "detail"]


def test_an_image_already_stored_is_a_duplicate_reported_by_name(project):
    data = image_bytes(11)
    write(project / "data/incoming/first.jpg", data)
    ingest_images(settings_for(project))
    write(project / "data/incoming/later/renamed.jpg", data)

    result = ingest_images(settings_for(project, source_id="camera_2"))

    assert (result.new, result.duplicates) == (0, 1)
    outcome = result.outcomes[0]
    assert (outcome.original_path, outcome.outcome) == ("later/renamed.jpg", "duplicate_of_stored")
    assert len(read_images_registry(project / "data/registry")) == 1
    assert drop_files(project) == []


def test_rerun_with_an_empty_drop_changes_nothing_and_says_so(project, mixed_drop):
    ingest_images(settings_for(project))
    before = {p: p.stat().st_mtime_ns for p in (project / "data").rglob("*") if p.is_file()}

    result = ingest_images(settings_for(project))

    after = {p: p.stat().st_mtime_ns for p in (project / "data").rglob("*") if p.is_file()}
    assert after == before
    assert "drop zone is empty; nothing changed" in result.summary()


def test_files_still_being_written_are_left_for_the_next_run(project):
    write(project / "data/incoming/upload.jpg.part", image_bytes(12)[:100])
    result = ingest_images(settings_for(project))
    assert [o.outcome for o in result.outcomes] == ["skipped_in_progress"]
    assert (project / "data/incoming/upload.jpg.part").exists()


def test_a_second_writer_waits_then_says_why_it_stopped(project):
    write(project / "data/incoming/a.jpg", image_bytes(13))
    registry = project / "data/registry"
    registry.mkdir(parents=True)
    with (
        writer_lock(registry, timeout_s=1, holder="an ingestion"),
        pytest.raises(IngestionLockedError) as raised,
    ):
        ingest_images(settings_for(project, lock_timeout_s=0.2))
    message = raised.value.message
    assert message == (
        f"The registries' writer lock {registry / '.writer.lock'} is held by an ingestion (pid {os.getpid()} on "
        f"{socket.gethostname()}, for 0 s since {message.split(' since ')[1][:8]} UTC) and was not released within "
        f"0.2 s; run again once that process has finished, or, if it hangs, `kill {os.getpid()}` and run again "
        "(ingestion.lock_timeout_s sets how long to wait)."
    )
    assert raised.value.exit_code == 3
    assert drop_files(project)  # untouched while locked
    assert ingest_images(settings_for(project)).new == 1


def test_two_ingestions_at_once_register_every_image_exactly_once(project):
    images = {f"batch/{i:03d}.jpg": image_bytes(100 + i) for i in range(60)}
    for name, data in images.items():
        write(project / "data/incoming" / name, data)
    # Each waits for the other's commit as long as it takes on a busy machine (two pytest
    # workers, say): what is proven is that racing writers store each image once, not the timeout.
    code = (
        "import sys; from pathlib import Path; from tests.test_ingestion import settings_for;"
        "from cv_pipelines.images.ingestion import ingest_images;"
        "print(ingest_images(settings_for(Path(sys.argv[1]), workers=1, lock_timeout_s=100)).new)"
    )
    # The checkout first, then the caller's path (a worktree's src/ over an installed copy).
    paths = [str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    env = project_env(project, PYTHONPATH=os.pathsep.join(p for p in paths if p))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(project)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    outputs = [int(out.strip()) for out, _ in results]
    assert sum(outputs) == len(images)
    registry = read_images_registry(project / "data/registry")
    assert sorted(registry["image_id"]) == sorted(sha(d) for d in images.values())
    assert drop_files(project) == []


def test_appending_touches_only_a_new_part(project):
    write(project / "data/incoming/a.jpg", image_bytes(21))
    ingest_images(settings_for(project))
    parts_before = {p: p.stat().st_mtime_ns for p in registry_parts.list_parts(project / "data/registry/images")}
    write(project / "data/incoming/b.jpg", image_bytes(22))
    ingest_images(settings_for(project))
    parts_after = registry_parts.list_parts(project / "data/registry/images")
    assert len(parts_after) == len(parts_before) + 1
    assert all(p.stat().st_mtime_ns == mtime for p, mtime in parts_before.items())
    assert pq.read_table(parts_after[-1]).num_rows == 1


def test_compaction_keeps_every_row_and_loads_in_one_call(project):
    for i in range(4):
        write(project / f"data/incoming/{i}.jpg", image_bytes(30 + i))
        ingest_images(settings_for(project))
    images = project / "data/registry/images"
    before = read_images_registry(project / "data/registry")
    assert registry_parts.compact_registry(images) == 4
    assert len(registry_parts.list_parts(images)) == 1
    pd.testing.assert_frame_equal(read_images_registry(project / "data/registry"), before)


def test_interrupted_compaction_is_completed_without_losing_rows(project):
    for i in range(3):
        write(project / f"data/incoming/{i}.jpg", image_bytes(40 + i))
        ingest_images(settings_for(project))
    images = project / "data/registry/images"
    before = read_images_registry(project / "data/registry")
    # Simulate a crash between the two renames of the swap.
    staging = images.with_name("images.compacting")
    registry_parts.write_atomically(pq.read_table(registry_parts.list_parts(images)[0]).slice(0, 0), staging / "x")
    (staging / "x").unlink()
    table = registry_parts.pa.concat_tables([pq.read_table(p) for p in registry_parts.list_parts(images)])
    registry_parts.write_atomically(table, staging / "part-99999999T000000000000Z-compacted.parquet")
    (staging / "COMPLETE").touch()
    images.rename(images.with_name("images.replaced"))
    pd.testing.assert_frame_equal(read_images_registry(project / "data/registry"), before)  # readers still see it

    write(project / "data/incoming/new.jpg", image_bytes(49))
    ingest_images(settings_for(project))  # a writer finishes the swap under the lock

    after = read_images_registry(project / "data/registry")
    assert len(after) == len(before) + 1
    assert not images.with_name("images.replaced").exists()
    assert not staging.exists()


def test_images_registry_catalog_entry_loads_one_dataframe(project, mixed_drop):
    run_pipeline(project, "ingestion")

    from kedro.framework.session import KedroSession

    with KedroSession.create(project_path=project, env="test") as session:
        catalog = session.load_context().catalog
        registry = catalog.load("images_registry")
        rejections = catalog.load("rejections_registry")
    assert len(registry) == len(mixed_drop["good"])
    assert len(rejections) == len(mixed_drop["bad"])
    assert list(registry.columns[:4]) == ["image_id", "path", "source_id", "ingested_at"]


def test_kedro_run_prints_a_one_line_summary(project, mixed_drop, caplog):
    """The real command prints the summary on its stderr; a second run (in-process) says nothing changed."""
    completed = run_kedro(project, "run", "--pipelines", "ingestion", "--env", "test")
    assert completed.returncode == 0, completed.stderr
    assert "7 new, 1 duplicate(s), 8 rejected in" in completed.stderr
    assert "images/s" in completed.stderr

    caplog.set_level(logging.INFO, logger="cv_pipelines")
    again = kedro_cli(project, "run", "--pipelines", "ingestion")
    assert again.exit_code == 0, again.output
    assert "the drop zone is empty; nothing changed" in caplog.text


def test_drop_zone_dataset_loads_what_is_waiting_and_previews_it(project):
    from cv_pipelines.datasets.drop_zone_dataset import DropZoneDataset

    write(project / "data/incoming/nested/a.jpg", image_bytes(51))
    write(project / "data/incoming/.hidden.jpg", image_bytes(52))
    write(project / "data/incoming/b.jpg.part", b"half")
    dataset = DropZoneDataset(path="data/incoming")
    waiting = dataset.load()
    assert [relative for _, relative in waiting.files] == ["nested/a.jpg"]
    assert waiting.in_progress == ("b.jpg.part",)
    assert dataset.preview()["data"] == [["nested/a.jpg", "ready"], ["b.jpg.part", "still being written"]]
    with pytest.raises(Exception, match="local folder"):
        DropZoneDataset(path="s3://bucket/incoming")


def test_image_store_dataset_commits_a_plan_made_before_the_lock(project, mixed_drop):
    """The pipeline's path: load, check and plan outside the lock; the save commits under it."""
    from cv_pipelines.datasets.drop_zone_dataset import DropZoneDataset
    from cv_pipelines.datasets.image_store_dataset import ImageStoreDataset
    from cv_pipelines.images.ingestion import check_new_images, describe_committed_plan, plan_ingestion

    params = settings_for(project).params
    plan = plan_ingestion(check_new_images(DropZoneDataset(path="data/incoming").load(), params), params)
    ingest_images(settings_for(project))  # another writer stores the same drop first
    store = ImageStoreDataset(store="data/store/images", registry="data/registry", quarantine="data/quarantine")

    store.save(plan)  # its inputs are gone: nothing is registered or quarantined twice

    registry = store.load()
    assert len(registry) == len(mixed_drop["good"])
    assert len(registry_parts.read_registry(project / "data/registry/rejections")) == len(mixed_drop["bad"])
    outcomes = describe_committed_plan(plan, registry).report().set_index("original_path")["outcome"]
    assert outcomes["a.jpg"] == "duplicate_of_stored" and outcomes["copies/a_again.jpg"] == "duplicate_in_drop"


def test_registry_dataset_appends_and_replaces_by_key(project):
    from cv_pipelines.datasets.parquet_registry_dataset import KeyedRows, ParquetRegistryDataset

    exclusions = ParquetRegistryDataset(path="data/registry/exclusions")
    assert list(exclusions.load().columns)[:2] == ["image_id", "label_set"]  # empty, with its schema
    now = pd.Timestamp.now(tz="UTC")
    rows = pd.DataFrame({"image_id": ["a", "b"], "label_set": "demo", "reason": "r", "source": "s", "excluded_at": now})
    exclusions.save(KeyedRows({"demo-batch_1": rows}))
    part = registry_parts.keyed_part_path(project / "data/registry/exclusions", "demo-batch_1")
    written = part.stat().st_mtime_ns
    exclusions.save(
        KeyedRows({"demo-batch_1": rows.assign(excluded_at=now + pd.Timedelta("1s"))}, unchanged_if=("excluded_at",))
    )
    assert part.stat().st_mtime_ns == written  # same rows: the part is left as it is
    exclusions.save(KeyedRows({"demo-batch_1": rows.head(1)}))
    exclusions.save(rows.tail(1))  # a DataFrame appends a part
    assert sorted(exclusions.load()["image_id"]) == ["a", "b"]
    assert len(registry_parts.list_parts(project / "data/registry/exclusions")) == 2


def test_a_copy_still_there_is_stored_when_the_planned_first_one_vanished(project):
    from cv_pipelines.images.ingestion import check_new_images, commit_ingestion, list_new_images, plan_ingestion

    data = image_bytes(61)
    write(project / "data/incoming/a.jpg", data)
    write(project / "data/incoming/b.jpg", data)
    params = settings_for(project).params
    plan = plan_ingestion(check_new_images(list_new_images(project / "data/incoming"), params), params)
    (project / "data/incoming/a.jpg").unlink()  # gone before the commit, stored by nobody

    result = commit_ingestion(plan, layout_for(project))

    assert (result.new, result.duplicates) == (1, 0)
    assert read_images_registry(project / "data/registry")["original_path"].tolist() == ["b.jpg"]
    assert drop_files(project) == [] and len(store_files(project)) == 1


def test_a_run_after_a_hung_one_says_so_in_one_sentence(project):
    """The lock timeout through the pipeline: exit 3, one ``Error:`` line naming the holder, no traceback."""
    write(project / "data/incoming/a.jpg", image_bytes(71))
    registry = project / "data/registry"
    registry.mkdir(parents=True)
    with writer_lock(registry, timeout_s=1, holder="an ingestion"):  # the hung run
        result = kedro_cli(project, "run", "--pipelines", "ingestion", "--params", "ingestion.lock_timeout_s=0.2")
    assert result.exit_code == 3, result.output
    assert isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "Traceback" not in result.output
    assert f"is held by an ingestion (pid {os.getpid()}" in errors[0] and f"`kill {os.getpid()}`" in errors[0]
    assert drop_files(project)  # untouched


def run_bounded(call, *, timeout_s: float, unblock=()):
    """``call()`` in a thread, failing the test if it does not return within ``timeout_s``.

    On a timeout, each FIFO in ``unblock`` is opened for writing and closed, so a reader
    blocked on it gets end-of-file and the thread ends with the test.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        for fifo in unblock:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"did not return within {timeout_s} s (blocked on a FIFO?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def regular_store_files(root: Path) -> list[Path]:
    """Every store entry, asserting each is a regular file with one name: the store's own."""
    entries = sorted(p for p in (root / "data/store/images").rglob("*") if not p.is_dir() or p.is_symlink())
    for path in entries:
        mode = path.lstat()
        assert stat.S_ISREG(mode.st_mode) and mode.st_nlink == 1, path
    return entries


@pytest.fixture
def linked_drop(project, tmp_path) -> dict[str, Path]:
    """A drop of symbolic links: to a file outside, to a file inside, dangling, a loop, to a folder."""
    incoming = project / "data/incoming"
    outside = write(tmp_path / "outside/photo.jpg", image_bytes(81))
    write(tmp_path / "outside/album/inner.jpg", image_bytes(82))
    write(incoming / "real.jpg", image_bytes(83))
    links = {
        "outside.jpg": outside,
        "alias.jpg": Path("real.jpg"),  # inside the drop zone: refused all the same
        "dangling.jpg": tmp_path / "nowhere.jpg",
        "loop.jpg": Path("loop.jpg"),
        "album": tmp_path / "outside/album",
    }
    for name, target in links.items():
        (incoming / name).symlink_to(target)
    return {"outside": outside, **{name: incoming / name for name in links}}


def test_symlinks_are_set_aside_with_their_reason_and_never_followed(project, linked_drop):
    outside = linked_drop["outside"]
    mode_before = outside.stat().st_mode

    result = ingest_images(settings_for(project))

    assert (result.new, result.rejected) == (1, 5)
    stored = regular_store_files(project)
    assert [p.read_bytes() for p in stored] == [image_bytes(83)]
    assert outside.stat().st_mode == mode_before and outside.read_bytes() == image_bytes(81)  # untouched
    rejections = registry_parts.read_registry(project / "data/registry/rejections").set_index("original_path")
    assert sorted(rejections.index) == ["album", "alias.jpg", "dangling.jpg", "loop.jpg", "outside.jpg"]
    assert rejections.loc["outside.jpg", "reason"] == (
        f"outside.jpg: a symbolic link (to {str(outside)!r}), not a regular file; symbolic links are never "
        "followed; drop a copy of the file itself instead (the entry is set aside in quarantine)"
    )
    for name, row in rejections.iterrows():
        assert (project / row.quarantine_path).is_symlink(), name  # the link itself, moved
    assert drop_files(project) == [] and not any((project / "data/incoming").iterdir())

    again = ingest_images(settings_for(project))  # set aside once: not re-rejected on every run

    assert (again.new, again.rejected) == (0, 0)
    assert len(registry_parts.read_registry(project / "data/registry/rejections")) == 5


def test_a_plan_made_before_the_lock_sets_aside_a_dangling_link(project, tmp_path):
    """The pipeline's path re-checks inputs at commit time: a dangling link is still there."""
    from cv_pipelines.images.ingestion import check_new_images, commit_ingestion, list_new_images, plan_ingestion

    (project / "data/incoming").mkdir(parents=True)
    (project / "data/incoming/gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    params = settings_for(project).params
    plan = plan_ingestion(check_new_images(list_new_images(project / "data/incoming"), params), params)

    assert commit_ingestion(plan, layout_for(project)).rejected == 1
    assert (project / "data/quarantine" / plan.run_id / "gone.jpg").is_symlink()
    assert not (project / "data/incoming/gone.jpg").is_symlink()


def test_pipes_sockets_and_devices_are_set_aside_in_bounded_time(project, monkeypatch):
    incoming = project / "data/incoming"
    write(incoming / "ok.jpg", image_bytes(91))
    fifo = incoming / "x.jpg"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    monkeypatch.chdir(incoming)  # a socket's path must be short: bind it relative to here
    sock = socket.socket(socket.AF_UNIX)
    sock.bind("s.jpg")
    kinds = {"x.jpg": "a named pipe (FIFO)", "s.jpg": "a socket"}
    try:
        os.mknod(incoming / "null.jpg", stat.S_IFCHR | 0o600, os.makedev(1, 3))
        kinds["null.jpg"] = "a character device"
    except (PermissionError, OSError):
        pass  # no CAP_MKNOD here: pipes and sockets still cover "not a regular file"

    result = run_bounded(lambda: ingest_images(settings_for(project)), timeout_s=30, unblock=[fifo])
    sock.close()

    assert (result.new, result.rejected) == (1, len(kinds))
    rejections = registry_parts.read_registry(project / "data/registry/rejections").set_index("original_path")
    for name, kind in kinds.items():
        assert rejections.loc[name, "reason"].startswith(f"{name}: {kind}, not a regular file; drop a copy")
        assert not stat.S_ISREG((project / rejections.loc[name, "quarantine_path"]).lstat().st_mode)
    assert not any(incoming.iterdir())
    assert (ingest_images(settings_for(project)).new, len(regular_store_files(project))) == (0, 1)


def test_a_file_with_another_name_outside_is_copied_into_the_store(project, tmp_path):
    """A hard link shares the inode: linking it into the store would chmod (and expose) the outside file."""
    outside = write(tmp_path / "elsewhere.jpg", image_bytes(95))
    (project / "data/incoming").mkdir(parents=True)
    os.link(outside, project / "data/incoming/shared.jpg")
    mode_before = outside.stat().st_mode

    assert ingest_images(settings_for(project)).new == 1

    [stored] = regular_store_files(project)
    assert stored.read_bytes() == image_bytes(95) and not os.path.samefile(stored, outside)
    assert outside.stat().st_mode == mode_before and outside.stat().st_nlink == 1


# --- on Dask workers ------------------------------------------------------------------------

DASK_RUNNER = "cv_pipelines.engines.dask_runner.DaskRunner"


def ingested_state(root: Path) -> dict:
    """What an ingestion leaves, without its clocks and run ids: store, images registry, rejections, drop zone."""
    registry = read_images_registry(root / "data/registry").drop(columns=["ingested_at", "ingest_run_id"])
    rejections = registry_parts.read_registry(root / "data/registry/rejections")
    quarantined = {row.original_path: (row.reason.split(": ", 1)[1], sha((root / row.quarantine_path).read_bytes()))
                   for row in rejections.itertuples()}
    return {
        "store": {str(p.relative_to(root)): sha(p.read_bytes()) for p in store_files(root)},
        "registry": registry.sort_values("image_id").to_dict("records"),
        "rejected": quarantined,
        "left_in_drop": drop_files(root),
    }


def test_the_dask_runner_leaves_the_store_and_registries_one_process_leaves(project, mixed_drop, tmp_path, monkeypatch):
    on_dask = copy_project(project, tmp_path / "on_dask")  # the same drop, waiting in a second project
    alone = kedro_cli(project, "run", "--pipelines", "ingestion")
    assert alone.exit_code == 0, (alone.stderr[-3000:], alone.exception)
    use_project(on_dask, monkeypatch)
    spread = kedro_cli(on_dask, "run", "--pipelines", "ingestion", "--runner", DASK_RUNNER)
    assert spread.exit_code == 0, (spread.stderr[-3000:], spread.exception)

    expected = ingested_state(project)
    assert ingested_state(on_dask) == expected
    assert len(expected["store"]) == len(mixed_drop["good"]) and set(expected["rejected"]) == set(mixed_drop["bad"])
    assert expected["left_in_drop"] == []


def test_checks_spread_over_every_dask_worker_and_come_back_in_input_order(project, mixed_drop):
    from distributed import Client, LocalCluster, get_task_stream

    from cv_pipelines.images.ingestion import check_new_images, list_new_images

    params = section_parameters("ingestion", show_progress=False)
    waiting = list_new_images(project / "data/incoming")
    here = check_new_images(waiting, params)
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as tasks,
    ):
        there = check_new_images(waiting, params, dask_client=client)
        workers = set(client.scheduler_info()["workers"])
    assert len(workers) == 2
    assert there.files == here.files  # hashes, formats, sizes and reasons, file by file, in order
    assert {task["worker"] for task in tasks.data} == workers
    assert all(str(task["key"]).startswith("_inspect_chunk") for task in tasks.data)
