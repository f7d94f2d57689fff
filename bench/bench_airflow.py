"""The Airflow DAGs: how long the scheduler takes to parse them, and a DAG run against ``kedro run``.

    .venv/bin/python bench/bench_airflow.py [--epochs 3] [--rounds 1] [--parses 5]

Builds a throwaway copy of the project in a temporary folder (nothing in the checkout)
with the test environment's tiny demo export (24 images of 96 px), then measures:

- **DAG parse time**: Airflow's own per-file figure (``DagBag.dagbag_stats``, what the
  DAG processor reports) for each generated DAG file, each parse in a fresh process; the
  baseline is a DAG file of the same shape (same tasks, same dependencies, a sensor)
  whose tasks call nothing of the project, parsed the same way.
- **the training flow**: ``airflow dags test cv_pipelines_training_flow`` (a temporary
  AIRFLOW_HOME with SQLite metadata, migrated beforehand and not timed) against the same
  pipelines run by ``kedro run --pipelines training_flow`` in one session, each from its
  own copy of the same starting project, same params, same epochs. The DAG runs each
  pipeline as a session of its own (its own Kedro start, catalog and MLflow run), as an
  Airflow worker does; ``kedro run`` does them in one.

Prints each figure and the ratios, with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_training import timed
from loadavg import load_reported

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import make_project_copy, project_env  # noqa: E402
from tests.support.mlflow_store import create_mlflow_store  # noqa: E402
from tests.support.projects import _build, _export_steps, copy_project  # noqa: E402

PARSE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
assert not bag.import_errors, bag.import_errors
print(json.dumps({stat.file.rsplit("/", 1)[-1]: stat.duration.total_seconds() for stat in bag.dagbag_stats}))
"""

#: The training DAG's shape with tasks that do nothing: what any four-task DAG costs to parse.
BASELINE_DAG = '''
from datetime import datetime
from airflow.sdk import dag, task

@dag(dag_id="baseline", start_date=datetime(2026, 1, 1), schedule=None, catchup=False)
def baseline():
    @task(task_id="export")
    def export(): pass
    @task(task_id="training")
    def training(): pass
    @task(task_id="evaluation")
    def evaluation(): pass
    @task(task_id="deployment")
    def deployment(): pass
    export() >> training() >> evaluation() >> deployment()

baseline()
'''


def airflow_env(root: Path, home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return project_env(
        root, AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(root / "airflow/dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False", AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        KEDRO_ENV="test",
    )


def parse_times(folder: Path, env: dict[str, str], parses: int) -> dict[str, float]:
    """Median of Airflow's per-file parse duration over ``parses`` fresh processes."""
    found: dict[str, list[float]] = {}
    for _ in range(parses):
        result = subprocess.run([sys.executable, "-c", PARSE, str(folder)], env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(result.stderr[-3000:])
        for name, seconds in json.loads(result.stdout.strip().splitlines()[-1]).items():
            found.setdefault(name, []).append(seconds)
    return {name: statistics.median(values) for name, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="0: the parse times only")
    parser.add_argument("--parses", type=int, default=5)
    args = parser.parse_args()
    airflow = str(Path(sys.executable).with_name("airflow"))
    kedro = str(Path(sys.executable).with_name("kedro"))

    with tempfile.TemporaryDirectory(prefix="bench_airflow_") as tmp_name:
        tmp = Path(tmp_name)
        start = make_project_copy(tmp / "start")
        create_mlflow_store(start)
        _build(start, _export_steps())

        # Each file alone in a folder: the first file a process parses pays for the imports.
        files = {"baseline_dag.py": BASELINE_DAG}
        files |= {p.name: p.read_text() for p in sorted((start / "airflow/dags").glob("*.py"))}
        env = airflow_env(start, tmp / "airflow_parse")
        parsed = {}
        for name, text in files.items():
            (tmp / "parse" / name).mkdir(parents=True)
            (tmp / "parse" / name / name).write_text(text)
            parsed |= parse_times(tmp / "parse" / name, env, args.parses)
        baseline = parsed.pop("baseline_dag.py")
        print(f"DAG parse time (Airflow's per-file figure, each file alone, median of {args.parses} fresh processes):")
        print(f"  baseline four-task DAG            {baseline * 1000:7.1f} ms")
        for name, seconds in sorted(parsed.items()):
            print(f"  {name:<34}{seconds * 1000:7.1f} ms  ({seconds / baseline:.2f}x the baseline)")

        params = json.dumps({"epochs": args.epochs})
        dag_times, kedro_times = [], []
        for round_number in range(args.rounds):
            dag_root = copy_project(start, tmp / f"dag_{round_number}")
            kedro_root = copy_project(start, tmp / f"kedro_{round_number}")
            dag_env = airflow_env(dag_root, tmp / f"airflow_{round_number}")
            timed([airflow, "db", "migrate"], Path(dag_env["AIRFLOW_HOME"]), dag_env)
            dag_run = [airflow, "dags", "test", "cv_pipelines_training_flow", "-c", params]
            kedro_run = [kedro, "run", "--pipelines", "training_flow", "--env", "test",
                         "--params", f"training.epochs={args.epochs}"]
            # Alternate which goes first, so neither always gets the warmer file cache.
            order = [(dag_times, dag_run, Path(dag_env["AIRFLOW_HOME"]), dag_env),
                     (kedro_times, kedro_run, kedro_root, project_env(kedro_root))]
            for times, command, cwd, command_env in order if round_number % 2 == 0 else reversed(order):
                times.append(timed(command, cwd, command_env))
            print(f"  round {round_number + 1}: airflow dags test {dag_times[-1]:.1f} s, kedro run {kedro_times[-1]:.1f} s")
            shutil.rmtree(dag_root), shutil.rmtree(kedro_root)

        if not args.rounds:
            return
        dag_time, kedro_time = statistics.median(dag_times), statistics.median(kedro_times)
        print(f"training flow, {args.epochs} epochs on 24 images, median of {args.rounds} round(s):")
        print(f"  kedro run --pipelines training_flow (baseline) {kedro_time:7.1f} s")
        print(f"  airflow dags test cv_pipelines_training_flow   {dag_time:7.1f} s")
        print(f"  ratio airflow/kedro: {dag_time / kedro_time:.2f}; overhead {dag_time - kedro_time:+.1f} s")


if __name__ == "__main__":
    with load_reported():
        main()
