"""The detection service (``python -m cv_pipelines.serving``) against ``mlflow models serve``, same model, loopback.

    .venv/bin/python bench/bench_serving.py [--project .] [--requests 2000] [--concurrency 1 8 50]
                                            [--workers 1] [--max-queue N] [--env local]

Needs a project with a registered ``@champion``: ``make demo`` leaves one in the checkout
(``--project`` defaults to the current folder); any project the deployment pipeline ran
in does. Both servers are started by this script, in the same run, on 127.0.0.1, over
the same registered version (``models:/<deployment.model_name>@champion``, the store of
the project or ``MLFLOW_TRACKING_URI``), with the same environment (``OMP_NUM_THREADS``
and the model's own ONNX Runtime threads: the packaged model's configuration, loaded
alike by both):

- ours: ``POST /predict``, the image's bytes as the body;
- MLflow's scoring server (``--env-manager local``, one uvicorn worker): ``POST
  /invocations`` with the image base64 in ``dataframe_split`` JSON, what it takes.

Each concurrency level runs a bounded loop: ``--requests`` requests shared by that many
client threads, each on its own keep-alive connection (reopened after an error), the
same test images of the project's latest export in turn (synthetic demo images when
there is none), after a warm-up. The servers take turns level by level. Printed per
server and level: answers by kind (200, 503, other status, lost: a connection error or
a timeout, which must be 0 for ours), throughput (answers/s and 200s/s), client-side
latency percentiles p50/p95/p99 of the 200s, and the ratio ours / MLflow's; and the
load average before and after, since the CPU may be shared (the client threads run on
it too). ``--max-queue`` defaults to the concurrency level, so that neither server
refuses and the latencies compare; set it lower to see ours answer 503 instead.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

OFFLINE = {
    "KEDRO_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "YOLO_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
    "PYTHONWARNINGS": "ignore",
}


@dataclass
class Run:
    """What one server answered at one concurrency level."""

    server: str
    concurrency: int
    seconds: float = 0.0
    kinds: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    @property
    def answered_per_s(self) -> float:
        return (self.kinds["200"] + self.kinds["503"] + self.kinds["other"]) / self.seconds

    @property
    def ok_per_s(self) -> float:
        return self.kinds["200"] / self.seconds


class Target:
    """How to send one image to a server: path, body and headers."""

    def __init__(self, name: str, port: int, path: str, encode) -> None:
        self.name, self.port, self.path, self.encode = name, port, path, encode


def test_images(project: Path, count: int) -> list[bytes]:
    """The test split of the project's latest export, else synthetic demo images."""
    exports = sorted(project.glob("data/exports/*/images/test"), key=lambda p: p.stat().st_mtime)
    if exports:
        images = [p.read_bytes() for p in sorted(exports[-1].iterdir()) if p.is_file()][:count]
        if images:
            return images
    import tempfile

    from cv_pipelines.demo.synthetic import generate_demo_dataset

    with tempfile.TemporaryDirectory() as tmp:
        generate_demo_dataset(Path(tmp), num_images=count, image_size=256, seed=3)
        return [p.read_bytes() for p in sorted(Path(tmp).rglob("*.jpg"))][:count]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_up(process: subprocess.Popen, port: int, path: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server on port {port} exited with status {process.returncode} before it was up")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the server on port {port} did not come up in {timeout:.0f} s")
        time.sleep(0.3)


def load(target: Target, images: list[bytes], requests: int, concurrency: int) -> Run:
    """``requests`` requests from ``concurrency`` threads, each on its own keep-alive connection."""
    run = Run(target.name, concurrency)
    lock = threading.Lock()
    remaining = [requests]
    bodies = [target.encode(image) for image in images]

    def worker(offset: int) -> None:
        connection = None
        kinds: Counter = Counter()
        latencies: list[float] = []
        index = offset
        while True:
            with lock:
                if remaining[0] == 0:
                    break
                remaining[0] -= 1
            body, headers = bodies[index % len(bodies)]
            index += concurrency
            started = time.perf_counter()
            try:
                if connection is None:
                    connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=120)
                connection.request("POST", target.path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                kinds["lost"] += 1
                if connection is not None:
                    connection.close()
                connection = None
                continue
            if status == 200:
                kinds["200"] += 1
                latencies.append((time.perf_counter() - started) * 1000)
            else:
                kinds["503" if status == 503 else "other"] += 1
        if connection is not None:
            connection.close()
        with lock:
            run.kinds.update(kinds)
            run.latencies_ms.extend(latencies)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    run.seconds = time.perf_counter() - started
    return run


def start_ours(project: Path, env: dict, args, max_queue: int) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "cv_pipelines.serving", "--port", "0", "--workers", str(args.workers),
               "--max-queue", str(max_queue)]
    if args.env:
        command += ["--env", args.env]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    line = process.stdout.readline()
    if not line.startswith("Serving "):
        process.wait(timeout=30)
        raise SystemExit(f"python -m cv_pipelines.serving did not start (exit status {process.returncode})")
    port = int(line.split("http://127.0.0.1:")[1].split(",")[0].split()[0])
    wait_until_up(process, port, "/health")
    return process, port


def start_mlflow(project: Path, env: dict, model_uri: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1",
               "-p", str(port)]
    process = subprocess.Popen(command, cwd=project, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_until_up(process, port, "/ping")
    return process, port


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="a project with a @champion (default: .)")
    parser.add_argument("--env", default=None, help="its Kedro configuration environment (default: local)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per server and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 50])
    parser.add_argument("--workers", type=int, default=1, help="our model copies (deployment.serving.workers)")
    parser.add_argument("--max-queue", type=int, help="our queue (default: the concurrency level: no 503)")
    parser.add_argument("--images", type=int, default=34, help="test images sent in turn")
    parser.add_argument("--warmup", type=int, default=20, help="requests per server before each level")
    args = parser.parse_args()

    project = args.project.resolve()
    store = project / "data/mlflow/mlflow.db"
    tracking = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store}"
    if not os.environ.get("MLFLOW_TRACKING_URI") and not store.exists():
        raise SystemExit(f"{project} has no MLflow store (data/mlflow/mlflow.db); run `make demo` there first")
    from cv_pipelines.config.loader import section_parameters

    os.environ["CV_PIPELINES_PROJECT_ROOT"] = str(project)
    model_name = section_parameters("deployment", env=args.env, root=project).model_name
    env = {key: value for key, value in os.environ.items() if key != "CV_SERVING_TOKEN"}
    env.update(OFFLINE)
    env.update({
        "CV_PIPELINES_PROJECT_ROOT": str(project),
        "MLFLOW_TRACKING_URI": tracking,
        "YOLO_CONFIG_DIR": str(project / ".ultralytics"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    })
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    images = test_images(project, args.images)

    def ours_body(image: bytes):
        return image, {"Content-Type": "application/octet-stream"}

    def mlflow_body(image: bytes):
        body = {"dataframe_split": {"columns": ["image"], "data": [[base64.b64encode(image).decode()]]}}
        return json.dumps(body).encode(), {"Content-Type": "application/json"}

    load_before = os.getloadavg()
    print(f"{len(images)} images ({statistics.mean(map(len, images)) / 1000:.1f} kB on average) of {project}, "
          f"model {model_name}@champion; {os.cpu_count()} CPUs, OMP_NUM_THREADS={env['OMP_NUM_THREADS']}, "
          f"our workers {args.workers}; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    mlflow_process, mlflow_port = start_mlflow(project, env, f"models:/{model_name}@champion")
    runs: list[Run] = []
    statuses = {}
    try:
        for concurrency in args.concurrency:
            max_queue = args.max_queue if args.max_queue is not None else concurrency
            ours_process, ours_port = start_ours(project, env, args, max_queue)
            try:
                for target in (Target("ours", ours_port, "/predict", ours_body),
                               Target("mlflow", mlflow_port, "/invocations", mlflow_body)):
                    load(target, images, args.warmup, min(concurrency, args.warmup))
                    runs.append(load(target, images, args.requests, concurrency))
                    run = runs[-1]
                    print(f"  {target.name:6s} c={concurrency:<3d} {dict(run.kinds)} in {run.seconds:.1f} s", flush=True)
            finally:
                statuses[concurrency] = stop(ours_process)
    finally:
        stop(mlflow_process)
    load_after = os.getloadavg()

    print(f"\n{'server':8s} {'conc':>4s} {'200':>6s} {'503':>5s} {'other':>5s} {'lost':>5s} {'answers/s':>10s} "
          f"{'200/s':>8s} {'p50 ms':>8s} {'p95 ms':>8s} {'p99 ms':>8s}")
    for run in runs:
        k = run.kinds
        print(f"{run.server:8s} {run.concurrency:>4d} {k['200']:>6d} {k['503']:>5d} {k['other']:>5d} {k['lost']:>5d} "
              f"{run.answered_per_s:>10.1f} {run.ok_per_s:>8.1f} {run.percentile(0.5):>8.1f} "
              f"{run.percentile(0.95):>8.1f} {run.percentile(0.99):>8.1f}")
    print("\nratio ours / mlflow models serve (throughput of 200s; p50 and p99 latency, lower is better):")
    for concurrency in args.concurrency:
        ours, theirs = (next(r for r in runs if r.server == s and r.concurrency == concurrency) for s in ("ours", "mlflow"))
        print(f"  c={concurrency:<3d} throughput {ours.ok_per_s / theirs.ok_per_s:.2f}x, "
              f"p50 {ours.percentile(0.5) / theirs.percentile(0.5):.2f}x, "
              f"p99 {ours.percentile(0.99) / theirs.percentile(0.99):.2f}x")
    lost = sum(r.kinds["lost"] for r in runs if r.server == "ours")
    print(f"ours lost {lost} request(s); exit status after SIGTERM: {statuses}; "
          f"load average after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    if lost:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
