"""kill -9 a real ingestion at random instants, many times: nothing is lost or doubled."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cv_pipelines.images.ingestion import read_images_registry
from cv_pipelines.registries import parts as registry_parts
from tests.conftest import project_env
from tests.support.images import image_bytes, write

RUN_INGESTION = """
import sys
from pathlib import Path
from cv_pipelines.config.loader import section_parameters
from cv_pipelines.images.ingestion import IngestionJob, StoreLayout, ingest_images
root = Path(sys.argv[1])
layout = StoreLayout(
    project_root=root, store_dir=Path("data/store/images"),
    registry_dir=Path("data/registry"), quarantine_dir=Path("data/quarantine"),
)
params = section_parameters("ingestion", root=root, workers=1, show_progress=False, lock_timeout_s=60)
result = ingest_images(IngestionJob(layout, Path("data/incoming"), params))
print("DONE", result.new, result.duplicates, result.rejected, flush=True)
"""

#: Half aimed anywhere in a run, half inside its transaction; each kill is a fresh run of
#: ~1 s, so the count is what the test costs.
KILLS = 16


def _drop(root: Path, seed: int) -> dict[str, bytes]:
    files = {f"wave{seed}/img_{i:03d}.jpg": image_bytes(seed * 1000 + i, size=(160, 120)) for i in range(40)}
    files[f"wave{seed}/dup_of_first.jpg"] = files[f"wave{seed}/img_000.jpg"]
    files[f"wave{seed}/broken.jpg"] = b"not an image"
    for name, data in files.items():
        write(root / "data/incoming" / name, data)
    return files


def _start(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", RUN_INGESTION, str(root)],
        env=project_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_journal(journal_dir: Path, proc: subprocess.Popen) -> float | None:
    while proc.poll() is None:
        if any(journal_dir.glob("*.json")):
            return time.perf_counter()
        time.sleep(0.0005)
    return None


def _assert_every_part_is_whole(root: Path) -> None:
    for registry in ("images", "rejections"):
        for part in registry_parts.list_parts(root / "data/registry" / registry):
            pq.read_table(part)  # raises on a half-written file


@pytest.mark.slow
def test_kill_minus_nine_at_random_points_then_rerun(project: Path):
    rng = random.Random(20261123)
    # Calibrate: how long does one uninterrupted run of a wave take here?
    _drop(project, seed=0)
    journal_dir = project / "data/registry/_journal"
    started = time.perf_counter()
    proc = _start(project)
    journal_seen_at = _wait_for_journal(journal_dir, proc) or started
    while proc.poll() is None and any(journal_dir.glob("*.json")):
        time.sleep(0.0005)
    transaction_s = max(time.perf_counter() - journal_seen_at, 0.005)
    proc.communicate(timeout=120)
    full_run_s = time.perf_counter() - started
    assert proc.returncode == 0

    expected: dict[str, bytes] = {}
    killed_mid_run = 0
    left_a_journal = 0
    for wave in range(1, KILLS + 1):
        files = _drop(project, seed=wave)
        expected.update({n: d for n, d in files.items() if d != b"not an image"})
        proc = _start(project)
        if wave % 2:
            # Anywhere from start-up to just after the end of a run.
            time.sleep(rng.uniform(0.0, full_run_s * 1.1))
        else:
            # Inside the transaction: once its journal exists, at a random instant.
            _wait_for_journal(journal_dir, proc)
            time.sleep(rng.uniform(0.0, transaction_s))
        if proc.poll() is None:
            proc.kill()  # SIGKILL: no cleanup, no finally blocks
            killed_mid_run += 1
        proc.communicate(timeout=60)
        left_a_journal += any((project / "data/registry/_journal").glob("*.json"))
        _assert_every_part_is_whole(project)

    final = _start(project)
    out, err = final.communicate(timeout=300)
    assert final.returncode == 0, err
    assert killed_mid_run >= KILLS // 2, "the kills should land inside runs, not after them"
    print(f"killed {killed_mid_run}/{KILLS} runs, {left_a_journal} inside the transaction")
    assert left_a_journal >= KILLS // 5, "many kills should land inside the transaction itself"
    assert "DONE" in out

    registry = read_images_registry(project / "data/registry")
    unique = {hashlib.sha256(d).hexdigest() for d in expected.values()}
    wave0 = {hashlib.sha256(image_bytes(i, size=(160, 120))).hexdigest() for i in range(40)}
    assert sorted(registry["image_id"]) == sorted(unique | wave0)  # exactly once each
    stored = [p for p in (project / "data/store/images").rglob("*") if p.is_file()]
    assert sorted(p.stem for p in stored) == sorted(unique | wave0)  # no .staged leftovers
    for path in stored:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    assert [p for p in (project / "data/incoming").rglob("*") if p.is_file()] == []
    rejections = registry_parts.read_registry(project / "data/registry/rejections")
    assert len(rejections) == KILLS + 1  # one broken file per wave, recorded once
    for row in rejections.itertuples():
        assert (project / row.quarantine_path).read_bytes() == b"not an image"
    assert not list((project / "data/registry/_journal").glob("*"))
