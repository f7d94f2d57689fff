"""Run folders: one new folder per run, named by its UTC start time and run id, never reused."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cv_pipelines.files.stamps import utc_stamp


@dataclass(frozen=True)
class RunFolders:
    """The folder ``root`` whose sub-folders are runs, oldest first by name."""

    root: Path

    def new(self, run_id: str | None) -> Path:
        """A fresh, empty folder ``<UTC time>_<first 12 of run_id>``; never an existing one."""
        base = f"{utc_stamp()}_{(run_id or 'norun')[:12]}"
        self.root.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            folder = self.root / (base if attempt == 0 else f"{base}_{attempt}")
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                continue
        raise RuntimeError(f"could not create a new run folder under {self.root}")

    def all(self, marker: str) -> list[Path]:
        """Every run folder holding the file ``marker``, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and (p / marker).is_file())
