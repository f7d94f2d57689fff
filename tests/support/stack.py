"""The team set-up's stack for tests: started and stopped by the product's own command, one per module.

``stack`` (module scope) starts PostgreSQL, SeaweedFS's S3 gateway and ``mlflow server``
with ``python -m cv_pipelines.commands.stack up`` on a free block of loopback ports, for a
project copy whose ``conf/stack`` names that block's MLflow port and runs tiny settings
(committed, as a team commits its environment), and stops them after the module. A module
that needs the stack imports the fixture from here (tests/test_stack.py): under
``--dist loadfile`` all its tests share one stack.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import make_project_copy, project_env

STACK_COMMAND = [sys.executable, "-m", "cv_pipelines.commands.stack"]
MODEL = "cv_pipelines_detector"


@dataclass
class RunningStack:
    home: Path
    port_base: int
    project: Path
    secrets: dict[str, str]

    @property
    def mlflow_uri(self) -> str:
        return f"http://127.0.0.1:{self.port_base + 1}"

    def command(self, *args: str, project: Path | None = None) -> subprocess.CompletedProcess:
        argv = [*STACK_COMMAND, *args, "--home", str(self.home), "--project", str(project or self.project)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=project_env(self.project))

    def sql(self, query: str) -> list[tuple]:
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port_base, user="cv_pipelines",
            password=self.secrets["postgres_password"], dbname="mlflow",
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(query)
                return cursor.fetchall()
        finally:
            connection.close()

    def s3(self):
        from cv_pipelines.commands.stack import open_stack, s3_client

        return s3_client(open_stack(self.home), self.secrets)

    def keys(self, bucket: str) -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def free_port_block() -> int:
    """The first of 10 consecutive loopback ports that nothing listens on."""
    for _ in range(50):
        base = random.randrange(20000, 40000, 10)
        sockets = []
        try:
            for port in range(base, base + 10):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no 10 free consecutive ports on 127.0.0.1")


def stack_home_parent(tmp_path_factory) -> Path:
    """A folder for the stack's home. As root, PostgreSQL runs as the postgres user, who
    cannot enter pytest's private (0700) folders: a folder of its own in the system's."""
    if os.geteuid() != 0:
        return tmp_path_factory.mktemp("stack")
    parent = Path(tempfile.mkdtemp(prefix="cv-pipelines-stack-", dir="/tmp"))
    parent.chmod(0o755)
    return parent


def stack_project(root: Path, port_base: int) -> Path:
    """A project copy whose conf/stack names this stack's server and runs the test's tiny settings."""
    make_project_copy(root)
    globals_yml = root / "conf/stack/globals.yml"
    globals_yml.write_text(globals_yml.read_text().replace("127.0.0.1:15431", f"127.0.0.1:{port_base + 1}"))
    tiny = (root / "conf/test/parameters.yml").read_text()
    (root / "conf/stack/parameters.yml").write_text(tiny + "\ndeployment:\n  champion_floor: {map50: 0.0}\n")
    # Committed, as a team commits its environment: the fresh clone below gets it from git.
    subprocess.run(["git", "add", "conf/stack"], cwd=root, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "the stack environment"], cwd=root, check=True)
    return root


@pytest.fixture(scope="module", name="stack")
def running_stack(tmp_path_factory):
    parent = stack_home_parent(tmp_path_factory)
    port_base = free_port_block()
    project = stack_project(tmp_path_factory.mktemp("stack_project"), port_base)
    home = parent / ".stack"
    up = subprocess.run(
        [*STACK_COMMAND, "up", "--home", str(home), "--port-base", str(port_base), "--project", str(project)],
        capture_output=True, text=True, timeout=300, env=project_env(project),
    )
    try:
        assert up.returncode == 0, f"the stack did not start: {up.stderr.strip() or up.stdout}"
        assert "stack: up in" in up.stdout
        running = RunningStack(home, port_base, project, json.loads((home / "secrets.json").read_text()))
        yield running
    finally:
        subprocess.run([*STACK_COMMAND, "down", "--home", str(home)], capture_output=True, timeout=120)
        shutil.rmtree(parent, ignore_errors=True)
