"""``dvc.yaml``'s stages under the real ``dvc repro`` and ``dvc status``, in a project copy.

The stages run plain ``kedro run --pipelines <name>``; ``KEDRO_ENV=test`` gives them the
test environment's tiny settings. The export stage runs for real; the training stage
only with ``--dry`` (its wiring, not another training).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import project_env
from tests.test_export import ingest, label, small_images

BIN = Path(sys.executable).parent


def dvc(root: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``root``: the stages' ``kedro`` from this environment, DVC's site cache in ``tmp``."""
    env = project_env(
        root,
        KEDRO_ENV="test",
        PATH=f"{BIN}:/usr/bin:/bin",
        DVC_SITE_CACHE_DIR=str(tmp / "dvc-site-cache"),  # not /var/tmp/dvc
    )
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def exports_of(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "data/exports").iterdir() if not p.name.startswith("."))


def test_the_export_stage_runs_under_dvc_repro_and_is_stale_only_when_its_inputs_change(project, tmp_path):
    rows = ingest(project, small_images(8))
    for i, row in enumerate(rows.values()):
        label(project, row, [("circle", 2, 2, 20, 20)] if i % 2 else [])

    first = dvc(project, tmp_path, "repro", "export")

    assert "Running stage 'export'" in first.stdout and "kedro run --pipelines export" in first.stdout
    assert exports_of(project) == ["demo_v1"]
    summary = yaml.safe_load((project / "data/reporting/export/last_export.yml").read_text())
    assert (summary["path"], summary["written"]) == ("data/exports/demo_v1", True)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]["export"]
    assert lock["cmd"] == "kedro run --pipelines export"
    assert {out["path"] for out in lock["outs"]} == {"data/exports", "data/reporting/export"}
    assert lock["params"]["conf/base/parameters_export.yml"]["export"]["split_seed"] == 0
    assert "Data and pipelines are up to date." in dvc(project, tmp_path, "status", "export").stdout

    again = dvc(project, tmp_path, "repro", "export")
    assert "Stage 'export' didn't change, skipping" in again.stdout and "Running stage" not in again.stdout
    assert exports_of(project) == ["demo_v1"]

    # Training is wired after the export: a dry repro would run training alone, and runs nothing.
    dry = dvc(project, tmp_path, "repro", "--dry", "training")
    assert "Running stage 'training'" in dry.stdout and "kedro run --pipelines training" in dry.stdout
    assert "Running stage 'export'" not in dry.stdout
    assert not (project / "data/models/training").exists()

    params = project / "conf/base/parameters_export.yml"
    params.write_text(params.read_text().replace("split_seed: 0", "split_seed: 1"))
    stale = dvc(project, tmp_path, "status", "export").stdout
    assert "changed deps" in stale and "conf/base/parameters_export.yml" in stale and "modified:" in stale
