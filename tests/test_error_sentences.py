"""The walk: every error sentence the project can print ends a command without a traceback above it.

Three parts:

1. ``error_sites()`` reads ``src/`` (its syntax, nothing is imported) and lists every
   place that builds a ``ConfigurationError`` or ``ExternalServiceError`` (or a
   subclass, found the same way): the sentences a user can see.
2. ``TRIGGERS``: mistakes a user can type, each run as ``kedro run ...`` in this process
   (``tests.support.cli.kedro_cli``), checked for its exit status (2: fix the input, 3:
   a service failed), its sentence on stderr and no traceback anywhere in its output or
   logs. Each names the sites whose sentence it shows.
3. ``COVERED_ELSEWHERE``: the sites another test already walks to its sentence (most need
   a trained model, a CVAT server or a crash to reach), each with that test's id, which
   must exist. A site in neither fails the walk: a new sentence comes with its test.
   ``NOT_YET_COVERED`` holds the sites no test reaches yet, each with why; it may only shrink.

A site is named ``<file under src/cv_pipelines>::<function>: <its message as written>``,
and the tables name it by any start of that which names no other site: moving code leaves
the names as they are; rewording a message's start may rename it (the walk says which
sites no table names and which names no longer name a site).
"""

from __future__ import annotations

import ast
import logging
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, copy_project
from tests.support.cli import kedro_cli
from tests.support.projects import use_project

SOURCE = REPO_ROOT / "src/cv_pipelines"
ONE_SENTENCE_ERRORS = {"ConfigurationError", "ExternalServiceError"}


# --- 1. the sites ---------------------------------------------------------------------------


def _error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """The one-sentence errors and every class of ``src/`` deriving from one of them."""
    classes = set(ONE_SENTENCE_ERRORS)
    grew = True
    while grew:
        grew = False
        for tree in trees.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef) and node.name not in classes:
                    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                    if bases & classes:
                        classes.add(node.name)
                        grew = True
    return classes


def _calls(node: ast.AST, qualname: list[str], classes: set[str]) -> Iterator[tuple[str, ast.Call]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield from _calls(child, [*qualname, child.name], classes)
            continue
        if isinstance(child, ast.Call):
            func = child.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in classes:
                yield ".".join(qualname) or "<module>", child
        yield from _calls(child, qualname, classes)


def error_sites() -> dict[str, int]:
    """Every construction of a one-sentence error in ``src/``: site name -> line.

    A site's name is ``<file>::<function>: <its message as written>``; the tables below
    name a site by any start of it that names no other site.
    """
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in sorted(SOURCE.rglob("*.py"))}
    classes = _error_classes(trees)
    sites: dict[str, int] = {}
    for path, tree in trees.items():
        for qualname, call in _calls(tree, [], classes):
            message = ast.unparse(call.args[0]) if call.args else ""
            site = f"{path.relative_to(SOURCE).as_posix()}::{qualname}: {message}"
            sites[site] = call.lineno
    return sites


# --- 2. the triggers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Trigger:
    """A mistake typed at the command line, the sentence it must end in, and the sites that print it."""

    args: tuple[str, ...]
    sentence: str  # a regex searched in stderr
    sites: tuple[str, ...]
    exit_code: int = 2
    env: str | None = "test"
    #: prepares the project copy (and the environment, through the monkeypatch); may return a clean-up
    setup: Callable[[Path, pytest.MonkeyPatch], Callable[[], None] | None] | None = None


def _run(pipeline: str, *params: str) -> tuple[str, ...]:
    return ("run", "--pipelines", pipeline, *(("--params", ",".join(params)) if params else ()))


def _cvat_credentials(text: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (root / "conf/local/credentials.yml").write_text(text, encoding="utf-8")

    return setup


def _cvat_host_only(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAT_HOST", "http://127.0.0.1:9")


def _empty_folder(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (root / "data/labeled").mkdir(parents=True, exist_ok=True)


def _mlflow_setup_held(root: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Another command holds the MLflow set-up lock, and this one waits a tenth of a second for it."""
    from filelock import FileLock

    import cv_pipelines.hooks

    monkeypatch.setattr(cv_pipelines.hooks, "MLFLOW_SETUP_TIMEOUT_S", 0.1)
    lock = FileLock(str(root / "data/mlflow/mlflow.db.setup.lock"))
    lock.acquire()
    return lock.release


def _conf_file(name: str, text: str) -> Callable[[Path, pytest.MonkeyPatch], None]:
    def setup(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (root / "conf/test" / name).write_text(text, encoding="utf-8")

    return setup


def _cvat_reachable_nowhere(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CVAT_HOST", "http://127.0.0.1:9")
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "t")


def _exclusions_without_reason(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _cvat_reachable_nowhere(root, monkeypatch)
    (root / "exclusions.csv").write_text("image_id\nabc\n", encoding="utf-8")


def _detached_head(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=root, check=True)


DASK_RUNNER = "cv_pipelines.engines.dask_runner.DaskRunner"
PARAMETERS = "config/parameters.py::validate_parameters: describe_validation_error(exc)"
LABEL_SET_WITHOUT_CLASSES = "annotations/label_sets.py::label_set_classes: f'{parameter} is {label_set!r} but"

TRIGGERS = {
    "unknown-parameter": Trigger(
        _run("ingestion", "ingestion.drop_zon=x"),
        r"Unknown parameter 'ingestion\.drop_zon' \(from conf/base/parameters_ingestion\.yml or --params\)",
        (PARAMETERS,),
    ),
    "label-set-is-a-path": Trigger(
        _run("export", "labeling.label_set=../../../evil", "export.label_set=../../../evil"),
        r"Parameter 'labeling\.label_set' is invalid: '\.\./\.\./\.\./evil' cannot name a folder or a git tag; use",
        (PARAMETERS,),
    ),
    "dataset-version-is-a-path": Trigger(
        _run("export", "dataset_version=../../x"),
        r"Parameter 'dataset_version' is invalid: '\.\./\.\./x' is not a dataset version; give a tag",
        (PARAMETERS,),
    ),
    "unknown-matrix-candidate": Trigger(
        _run("ingestion", "matrix.only=nope"),
        r"Parameter 'matrix' is invalid: unknown candidate\(s\) nope; matrix\.candidates has default",
        (PARAMETERS,),
    ),
    "nothing-labeled-to-export": Trigger(
        _run("export"),
        r"no image of label set 'demo' is actively labeled .*; import or label some images first",
        ("pipelines/export/nodes.py::select_export_images: str(exc)",),
    ),
    "export-label-set-differs": Trigger(
        _run("export", "export.label_set=other"),
        r"export\.label_set is 'other' but labeling\.label_set is 'demo'",
        (LABEL_SET_WITHOUT_CLASSES,),
    ),
    "no-folder-to-import": Trigger(
        _run("import_coco"),
        r"No folder to import at .*: run `kedro run --pipelines import_coco --params import_coco\.source=",
        (
            "datasets/labeled_folder_dataset.py::LabeledFolderDataset._folder: f'No folder to import at {self._path}: run `kedro r",
        ),
    ),
    "import-label-set-differs": Trigger(
        _run("import_coco", "import_coco.source=data/labeled", "import_coco.label_set=other"),
        r"import_coco\.label_set is 'other' but labeling\.label_set is 'demo', and no COCO import recorded classes",
        (LABEL_SET_WITHOUT_CLASSES,),
        setup=_empty_folder,
    ),
    "new-label-set-without-a-name": Trigger(
        _run("import_coco", "import_coco.source=data/labeled", "import_coco.unknown_categories=new_label_set"),
        r"import_coco\.unknown_categories is new_label_set but import_coco\.label_set is not set: name the new",
        ("annotations/coco_import.py::import_label_set: 'import_coco.unknown_categories is new_label_set",),
        setup=_empty_folder,
    ),
    "new-label-set-is-the-configured-one": Trigger(
        _run(
            "import_coco",
            "import_coco.source=data/labeled",
            "import_coco.unknown_categories=new_label_set",
            "import_coco.label_set=demo",
        ),
        r"import_coco\.label_set 'demo' is labeling\.label_set, whose classes labeling\.labels declares, so it is",
        ("annotations/coco_import.py::import_label_set: f\"import_coco.label_set {label_set!r} is labeling",),
        setup=_empty_folder,
    ),
    "no-coco-file-to-import": Trigger(
        _run("import_coco", "import_coco.source=data/labeled"),
        r"set import_coco\.annotations to fix it\.",
        ("pipelines/import_coco/nodes.py::read_coco_folder: f'{exc}{fix}.'",),
        setup=_empty_folder,
    ),
    "no-cvat-server": Trigger(
        _run("labeling"),
        r"No CVAT server is configured: .*conf/local/credentials\.yml",
        ("labeling/cvat_connection.py::resolve_cvat_connection: f'No CVAT server is configured: {_HOW_TO}.'",),
    ),
    "no-cvat-secret": Trigger(
        _run("labeling"),
        r"No CVAT secret is configured for http://127\.0\.0\.1:9: ",
        ("labeling/cvat_connection.py::resolve_cvat_connection: f\"No CVAT secret is configured for {merged['host']}",),
        setup=_cvat_host_only,
    ),
    "cvat-credentials-misspelt": Trigger(
        _run("labeling"),
        r"The 'cvat' credentials entry has invalid keys \(.*hots.*\): ",
        ("labeling/cvat_connection.py::resolve_cvat_connection: f\"The 'cvat' credentials entry has invalid keys ({",),
        env=None,  # conf/local, where credentials.yml lives
        setup=_cvat_credentials("cvat:\n  host: http://127.0.0.1:9\n  access_token: t\n  hots: x\n"),
    ),
    "nothing-trained-to-evaluate": Trigger(
        _run("evaluation"),
        r"no training has run in this project yet; run `kedro run --pipelines training` first, or set evaluation\.run_id",
        ("datasets/trained_model_dataset.py::TrainedModelDataset._resolve_run: self._missing",),
    ),
    "no-export-to-train-on": Trigger(
        _run("training"),
        r"there is no export of label set 'demo' in .*/data/exports; run `kedro run --pipelines export` first",
        ("datasets/yolo_export_dataset.py::YoloExportDataset._find: str(exc)",),
    ),
    "pinned-export-missing": Trigger(
        _run("training", "training.export_version=7"),
        r"export demo_v7 does not exist in .*; set training\.export_version to one of them, or null",
        ("datasets/yolo_export_dataset.py::YoloExportDataset._find: f'{exc}; set training.export_version to one of t",),
    ),
    "candidate-name-not-a-namespace": Trigger(
        _run("matrix"),
        r"matrix candidate name 'a-b' is not usable as a Kedro namespace; use letters, digits and underscores",
        ("models/matrix.py::candidate_names: f'matrix candidate name {name!r} is not u",),
        setup=_conf_file("parameters_walk.yml", "matrix:\n  candidates:\n    a-b: {}\n"),
    ),
    "exclusions-csv-missing": Trigger(
        _run("labeling", "labeling.exclusions_csv=nowhere.csv"),
        r"labeling\.exclusions_csv .*nowhere\.csv does not exist: give the path of a CSV",
        ("pipelines/labeling/nodes.py::exclude_images_from_csv: f'labeling.exclusions_csv {csv_fil",),
        setup=_cvat_reachable_nowhere,
    ),
    "exclusions-csv-without-its-columns": Trigger(
        _run("labeling", "labeling.exclusions_csv=exclusions.csv"),
        r"labeling\.exclusions_csv: .*exclusions\.csv lacks the column\(s\) reason; expected image_id,reason\.",
        ("pipelines/labeling/nodes.py::exclude_images_from_csv: f'labeling.exclusions_csv: {exc}.'",),
        setup=_exclusions_without_reason,
    ),
    "unknown-evaluation-run": Trigger(
        _run("evaluation", "evaluation.run_id=0123456789abcdef"),
        r"0123456789abcdef.*; see `mlflow ui` for the run ids and set evaluation\.run_id",
        ("datasets/trained_model_dataset.py::TrainedModelDataset._resolve_run: f'{exc}; see `mlflow ui` for the run",),
    ),
    "snapshot-on-a-detached-head": Trigger(
        _run("snapshot"),
        r"HEAD is detached",
        ("pipelines/snapshot/nodes.py::take_snapshot: str(exc)",),
        setup=_detached_head,
    ),
    "dask-setting-invalid": Trigger(
        ("run", "--pipelines", "ingestion", "--runner", DASK_RUNNER),
        r"The Dask setting 'dask_client\.n_workers' is invalid \(.*\); set it in conf/base/dask\.yml",
        ("engines/dask_runner.py::dask_client_settings",),
        setup=_conf_file("dask.yml", "dask_client:\n  n_workers: 0\n"),
    ),
    "dask-scheduler-unreachable": Trigger(
        ("run", "--pipelines", "ingestion", "--runner", DASK_RUNNER),
        r"The Dask scheduler at dask_client\.address tcp://127\.0\.0\.1:9 does not answer .*, so no node ran",
        ("engines/dask_runner.py::_client",),
        exit_code=3,
        setup=_conf_file("dask.yml", "dask_client:\n  address: tcp://127.0.0.1:9\n  connect_timeout_s: 1\n"),
    ),
    # A tracked pipeline: an untracked one (ingestion) no longer sets MLflow up at all.
    "mlflow-store-busy": Trigger(
        _run("evaluation"),
        r"another kedro command has been setting up the MLflow store .*mlflow\.db for more than 0 s; run again",
        ("hooks.py::_mlflow_setup_lock.busy: f'another kedro command has been setting up the MLf",),
        setup=_mlflow_setup_held,
    ),
}


@pytest.fixture(scope="module")
def walk_template(project_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy the triggers start from (each gets its own copy of it: some write credentials or folders)."""
    return copy_project(project_template, tmp_path_factory.mktemp("walk") / "project")


@pytest.mark.parametrize("name", sorted(TRIGGERS))
def test_each_mistake_ends_in_its_one_sentence_and_no_traceback(name, walk_template, tmp_path, monkeypatch, caplog):
    trigger = TRIGGERS[name]
    root = use_project(copy_project(walk_template, tmp_path / "project"), monkeypatch)
    clean_up = trigger.setup(root, monkeypatch) if trigger.setup is not None else None
    try:
        with caplog.at_level(logging.INFO):
            result = kedro_cli(root, *trigger.args, env=trigger.env)
    finally:
        if clean_up is not None:
            clean_up()
    shown = result.output + caplog.text
    assert isinstance(result.exception, SystemExit), f"{name}: not a one-sentence error:\n{shown[-3000:]}"
    assert result.exit_code == trigger.exit_code, shown[-3000:]
    assert re.search(trigger.sentence, result.stderr), f"{name}: {result.stderr!r}"
    assert "Traceback" not in shown, f"{name}: a traceback above the sentence:\n{shown[-3000:]}"
    # One sentence, and the last thing the command says.
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], result.stderr


# --- 3. every site is walked --------------------------------------------------------------------

#: The tests that reach one or more sentences without a ``kedro run`` here: library calls
#: whose error a command shows as it is (a ClickException), or commands needing a trained
#: model, a CVAT server or a crash.
HERE = "tests/test_error_sentences.py::"
PROJECT = "tests/test_project.py::"
TRAINING = "tests/test_training.py::"
MATRIX = "tests/test_matrix.py::"
DASK = "tests/test_dask_runner.py::"
SERVING = "tests/test_serving.py::"

STACK = "tests/test_stack.py::"
AIRFLOW = "tests/test_airflow.py::"
JOBS = "tests/test_jobs.py::"

#: Sites whose sentence another test reaches, with that test (``tests/<file>::<test function>``).
COVERED_ELSEWHERE = {
    'commands/jobs.py::render_from_arguments: f"--commit': JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    'commands/jobs.py::render_from_arguments: f"The training request': JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    "commands/jobs.py::render_from_arguments: f'--gpus": JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    'engines/compute_settings.py::compute_settings: f"compute.': JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    'engines/compute_settings.py::compute_settings: f"{root': JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    'engines/kubernetes_job.py::candidate_params: f"matrix candidate': JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    "engines/kubernetes_job.py::candidate_params: f'matrix candidate": JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    'engines/kubernetes_job.py::code_repository_of': JOBS + "test_the_jobs_command_refuses_bad_input_with_one_sentence",
    'engines/providers.py::KubernetesProvider.cancel': JOBS + "test_unknown_providers_strategies_and_a_refused_status_or_cancel_are_one_sentence",
    'engines/providers.py::KubernetesProvider.status': JOBS + "test_unknown_providers_strategies_and_a_refused_status_or_cancel_are_one_sentence",
    'engines/providers.py::make_provider': JOBS + "test_unknown_providers_strategies_and_a_refused_status_or_cancel_are_one_sentence",
    'engines/providers.py::submit_with_strategy: f"No compute': JOBS + "test_a_submission_refused_falls_back_and_when_every_provider_fails_one_sentence_lists_why",
    "versioning/code.py::check_published: f'The dataset version tag {tag} is not": JOBS + "test_jobs_submit_refuses_a_commit_or_tag_the_cloned_repository_lacks_before_anything_is_submitted",
    "versioning/code.py::check_published: f'The dataset version tag {tag} names": JOBS + "test_jobs_submit_refuses_a_commit_or_tag_the_cloned_repository_lacks_before_anything_is_submitted",
    "versioning/code.py::check_published: f'Commit": JOBS + "test_jobs_submit_refuses_a_commit_or_tag_the_cloned_repository_lacks_before_anything_is_submitted",
    "engines/providers.py::submit_with_strategy: f'Job {name}": JOBS + "test_a_job_submitted_again_is_refused_where_it_runs_and_never_falls_back_to_a_second_run",
    'engines/providers.py::submit_with_strategy: f"compute strategy': JOBS + "test_unknown_providers_strategies_and_a_refused_status_or_cancel_are_one_sentence",
    "engines/airflow.py::project_path_of: f\"{PROJECT_PATH_VARIABLE}": AIRFLOW
    + "test_a_dag_that_cannot_find_its_project_says_where_to_point_it",
    "engines/airflow.py::project_path_of: f\"The DAG file": AIRFLOW
    + "test_a_dag_that_cannot_find_its_project_says_where_to_point_it",
    "engines/dask_runner.py::DaskRunner._validate_nodes": DASK + "test_nodes_that_yield_their_outputs_are_refused",
    "commands/stack.py::_check_reachable_by_postgres": STACK
    + "test_as_root_a_home_the_postgres_user_cannot_reach_is_refused_with_the_fix",
    "commands/stack.py::_init_postgres": STACK
    + "test_postgresql_that_cannot_initialise_or_bind_says_so_and_keeps_the_users_files",
    "commands/stack.py::_start_postgres": STACK
    + "test_postgresql_that_cannot_initialise_or_bind_says_so_and_keeps_the_users_files",
    "commands/stack.py::_postgres_bin": STACK
    + "test_a_missing_server_program_and_a_service_that_never_answers_are_one_sentence",
    "commands/stack.py::_wait_until: f'{what} exited": STACK
    + "test_a_missing_server_program_and_a_service_that_never_answers_are_one_sentence",
    "commands/stack.py::_wait_until: f'{what} did not": STACK
    + "test_a_missing_server_program_and_a_service_that_never_answers_are_one_sentence",
    "commands/stack.py::postgres_connection: f\"PostgreSQL on 127.0.0.1:{stack.postgres_port} refused": STACK
    + "test_wrong_database_credentials_name_the_key_and_down_leaves_no_process",
    "commands/stack.py::postgres_connection: f'PostgreSQL on": STACK
    + "test_the_stack_commands_refuse_bad_homes_ports_and_projects_with_one_sentence",
    "commands/stack.py::open_stack: f'The stack at": STACK
    + "test_the_stack_commands_refuse_bad_homes_ports_and_projects_with_one_sentence",
    "commands/stack.py::open_stack: f\"The stack's port": STACK
    + "test_the_stack_commands_refuse_bad_homes_ports_and_projects_with_one_sentence",
    "commands/stack.py::_dvc_dir": STACK + "test_the_stack_commands_refuse_bad_homes_ports_and_projects_with_one_sentence",
    "commands/stack.py::_weed_argv": STACK + "test_the_stack_commands_refuse_bad_homes_ports_and_projects_with_one_sentence",
    "hooks.py::_check_tracking_server": STACK + "test_a_tracking_server_that_does_not_answer_stops_the_run_with_one_sentence",
    "commands/stack.py::_require_running": STACK + "test_connecting_to_a_stack_that_is_not_running_says_where_to_start_it",
    "annotations/coco_import.py::with_label_set": "tests/test_import_coco.py::"
    "test_categories_outside_the_label_set_stop_the_import_before_anything_is_written",  # the real command, exit 2
    'annotations/label_sets.py::label_set_classes: f"labeling.labels': "tests/test_import_coco.py::"
    "test_append_adds_the_files_categories_at_the_end_and_old_class_ids_never_move",
    "labeling/cycle.py::_pull_batch": "tests/test_labeling.py::"
    "test_boxes_labeled_outside_the_label_set_stop_the_pull_before_anything_is_written",
    "config/loader.py::section_parameters": PROJECT
    + "test_matrix_candidate_names_and_section_parameters_are_refused_alike",
    "config/names.py::within_folder": PROJECT + "test_the_writers_refuse_a_name_that_escapes_even_past_the_parameters",
    "pipelines/snapshot/nodes.py::take_snapshot: f'label set": PROJECT
    + "test_the_writers_refuse_a_name_that_escapes_even_past_the_parameters",
    "datasets/yolo_export_dataset.py::YoloExportDataset.load": "tests/test_export.py::"
    "test_yolo_export_loads_what_it_saved_else_the_pinned_or_latest_version",
    "datasets/yolo_export_dataset.py::YoloExportDataset.save: f'the export selected": "tests/test_export.py::"
    "test_yolo_export_loads_what_it_saved_else_the_pinned_or_latest_version",
    "datasets/yolo_export_dataset.py::YoloExportDataset.save: f'{exc} (nothing was written)'": HERE
    + "test_the_export_dataset_refuses_a_label_set_that_escapes_and_writes_nothing",
    "labeling/cvat_connection.py::resolve_cvat_connection: f'No CVAT server": PROJECT
    + "test_missing_cvat_credentials_stop_a_cvat_pipeline_before_it_starts",
    "pipelines/labeling/nodes.py::run_labeling_cycle: str(exc)": "tests/test_labeling.py::"
    "test_a_service_failure_exits_with_3_and_one_sentence",  # the real command's exit status 3
    "models/matrix.py::candidate_names: 'matrix.candidates must map": HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "models/matrix.py::candidate_parameters": HERE + "test_library_sentences_a_command_shows_as_they_are",
    "models/matrix.py::select": MATRIX + "test_list_shows_candidates_and_arguments_without_training",
    'models/trainers.py::load_trainer: f"trainer {spec!r} is neither': HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "models/trainers.py::load_trainer: f'trainer {spec!r} cannot be loaded": HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "models/trainers.py::load_trainer: f'trainer {spec!r} lacks": MATRIX
    + "test_a_trainer_without_the_interface_is_refused",
    "models/training.py::interrupted_run: f'cannot resume {wanted}": HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "models/training.py::interrupted_run: f'cannot resume {folder.name}: that training finished": HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "models/training.py::interrupted_run: f'training.resume is set": TRAINING
    + "test_a_killed_training_resumes_from_last_pt_in_its_own_folder",
    "models/training.py::_check_checkpoint": TRAINING + "test_resume_refuses_a_checkpoint_that_is_not_whole",
    "pipelines/deployment/nodes.py::_tracked_run": HERE + "test_library_sentences_a_command_shows_as_they_are",
    "pipelines/deployment/nodes.py::check_serving_parity": HERE + "test_library_sentences_a_command_shows_as_they_are",
    "pipelines/deployment/nodes.py::_rollback": "tests/test_deployment.py::test_a_rollback_with_no_earlier_champion_says_so",
    "pipelines/evaluation/nodes.py::select_models: exc.naming": TRAINING
    + "test_a_missing_gpu_is_refused_naming_the_parameter_that_asked_for_it",
    'pipelines/evaluation/nodes.py::select_models: "the evaluation pipeline needs MLflow tracking': HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "pipelines/evaluation/nodes.py::_export_of: f'training run {trained.run_id} recorded no export path": HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "pipelines/evaluation/nodes.py::_export_of: f'the export training run": HERE
    + "test_library_sentences_a_command_shows_as_they_are",
    "pipelines/evaluation/nodes.py::_export_of: f'export {export.name} no longer holds": "tests/test_evaluation_checks.py::"
    "test_a_replaced_export_is_still_refused_on_its_recorded_hash",
    'pipelines/evaluation/nodes.py::_export_of: f"export {export.name} no longer holds': "tests/test_evaluation_checks.py::"
    "test_an_export_changed_after_the_training_is_refused_naming_it",
    "pipelines/matrix/nodes.py::train_candidate: exc.naming": TRAINING
    + "test_a_missing_gpu_is_refused_naming_the_parameter_that_asked_for_it",
    "pipelines/matrix/nodes.py::check_required": MATRIX
    + "test_a_required_failure_fails_the_run_after_the_leaderboard_and_filters_select",
    "pipelines/training/nodes.py::prepare_training": TRAINING
    + "test_a_missing_gpu_is_refused_naming_the_parameter_that_asked_for_it",
    "pipelines/training/nodes.py::_check_pinned_export": HERE + "test_library_sentences_a_command_shows_as_they_are",
    "registries/writer_lock.py::_busy": "tests/test_ingestion.py::test_a_run_after_a_hung_one_says_so_in_one_sentence",
    "versioning/dataset_versions.py::_remote_error": "tests/test_dataset_versions.py::"
    "test_a_snapshot_with_an_unwritable_remote_exits_3_through_kedro",
    "versioning/dataset_versions.py::check_dataset_version": "tests/test_dataset_versions.py::"
    "test_a_dataset_version_that_does_not_exist_exits_2_without_a_traceback",
    "versioning/dataset_versions.py::read_registry_at": "tests/test_dataset_versions.py::"
    "test_registries_gone_from_the_cache_and_remote_are_one_sentence",
    "versioning/dataset_versions.py::ensure_images_present": "tests/test_dataset_versions.py::"
    "test_images_gone_from_the_store_cache_and_remote_are_one_sentence",
    "serving/service.py::build_service": HERE + "test_the_serving_command_ends_in_one_line_for_each_mistake",
    "serving/service.py::main: f'--canary": HERE + "test_the_serving_command_ends_in_one_line_for_each_mistake",
    "serving/service.py::main: f'{option}": SERVING + "test_startup_mistakes_end_in_one_sentence_before_anything_is_served",
    "serving/service.py::serving_token": SERVING + "test_startup_mistakes_end_in_one_sentence_before_anything_is_served",
    "serving/service.py::check_bind: f'--port": SERVING
    + "test_startup_mistakes_end_in_one_sentence_before_anything_is_served",
    'serving/service.py::check_bind: f"serving on': SERVING
    + "test_startup_mistakes_end_in_one_sentence_before_anything_is_served",
    "serving/server.py::bind_socket": SERVING + "test_startup_mistakes_end_in_one_sentence_before_anything_is_served",
}

#: Sites no test reaches yet, with why: the walk's known gaps (it may only shrink).
NOT_YET_COVERED = {
    "datasets/trained_model_dataset.py::TrainedModelDataset._resolve_run: f'the latest model": (
        "needs a training summary written with tracking off"
    ),
    "datasets/trained_model_dataset.py::TrainedModelDataset._model_of_run": "needs a training run whose model is unusable",
    "pipelines/deployment/nodes.py::package_model": "needs an evaluated run of a family other than Ultralytics'",
    "pipelines/deployment/nodes.py::_version_tags": "needs an evaluation whose runs are missing from the store",
    "pipelines/matrix/nodes.py::train_candidate: f'matrix.candidates.{name}.export_version": (
        "needs an export (a candidate pinned to a missing version)"
    ),
    'pipelines/matrix/nodes.py::train_candidate: "the matrix pipeline needs MLflow tracking': (
        "needs an export and the matrix with tracking off"
    ),
    'pipelines/matrix/nodes.py::train_candidate: f"matrix candidate {name} failed after': "needs a failing candidate with fail_fast",
    "pipelines/training/nodes.py::_export_of_run: f'cannot resume {run_dir.name}: {exc}": (
        "needs an interrupted training whose export is gone"
    ),
    "pipelines/training/nodes.py::_export_of_run: f'cannot resume {run_dir.name}: export": (
        "needs an interrupted training whose export changed"
    ),
}


def _test_exists(test_id: str) -> bool:
    file, _, name = test_id.partition("::")
    path = REPO_ROOT / file
    if not path.is_file():
        return False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.FunctionDef) and node.name == name for node in ast.walk(tree))


def test_every_error_sentence_of_src_is_walked_by_a_test():
    sites = error_sites()
    tables = {
        "TRIGGERS": {site: name for name, trigger in TRIGGERS.items() for site in trigger.sites},
        "COVERED_ELSEWHERE": COVERED_ELSEWHERE,
        "NOT_YET_COVERED": NOT_YET_COVERED,
    }
    named: dict[str, set[str]] = {table: set() for table in tables}
    problems = []
    for table, keys in tables.items():
        for key in keys:
            matches = [site for site in sites if site.startswith(key)]
            if len(matches) != 1:
                problems.append(f"{table} key {key!r} names {len(matches)} sites: {matches}")
            named[table].update(matches)
    assert not problems, "\n".join(problems)
    unwalked = sorted(set(sites) - set().union(*named.values()))
    assert not unwalked, (
        "error sentences no test walks (add a trigger to TRIGGERS, or the test that covers each to "
        "COVERED_ELSEWHERE):\n" + "\n".join(f"  {site}  (line {sites[site]})" for site in unwalked)
    )
    missing = sorted({test for test in COVERED_ELSEWHERE.values() if not _test_exists(test)})
    assert not missing, f"COVERED_ELSEWHERE names tests that do not exist: {missing}"
    still_listed = named["NOT_YET_COVERED"] & (named["TRIGGERS"] | named["COVERED_ELSEWHERE"])
    assert not still_listed, f"covered sites still listed in NOT_YET_COVERED: {sorted(still_listed)}"


def test_the_serving_command_ends_in_one_line_for_each_mistake(project):
    """``python -m cv_pipelines.serving`` is not a Kedro command: its ``main`` turns each sentence into its exit line."""
    from cv_pipelines.serving.service import main

    for argv, sentence in (
        (["--canary-fraction", "2"], "--canary-fraction must be between 0 and 1, got 2.0"),
        ([], "registered model 'cv_pipelines_detector' has no @champion to serve; run `kedro run --pipelines deploy"),
    ):
        with pytest.raises(SystemExit) as stopped:  # a string code: printed as it is, no traceback
            main(argv)
        assert str(stopped.value.code).startswith(f"Error: {sentence}"), stopped.value.code


def test_library_sentences_a_command_shows_as_they_are(project, tmp_path):
    """Sentences raised deep in the library: each is a ClickException, so the command prints it as it is."""
    from types import SimpleNamespace

    from cv_pipelines.config.loader import section_parameters
    from cv_pipelines.errors import ConfigurationError
    from cv_pipelines.files.run_folders import RunFolders
    from cv_pipelines.models.matrix import candidate_names, candidate_parameters
    from cv_pipelines.models.packaging import PackagedModel
    from cv_pipelines.models.trainers import load_trainer
    from cv_pipelines.models.training import SUMMARY_FILE, interrupted_run
    from cv_pipelines.pipelines.deployment.nodes import _tracked_run, check_serving_parity
    from cv_pipelines.pipelines.evaluation.nodes import _export_of, select_models
    from cv_pipelines.pipelines.training.nodes import _check_pinned_export

    def refused(call: Callable[[], object], sentence: str) -> None:
        with pytest.raises(ConfigurationError) as error:
            call()
        assert re.match(sentence, error.value.message), error.value.message

    refused(lambda: candidate_names({"candidates": "yolo"}), "matrix.candidates must map candidate names to training")
    training = section_parameters("training").model_dump()
    refused(
        lambda: candidate_parameters("small", training, {"candidates": {"small": {"epochs": 0}}}),
        r"matrix\.candidates\.small: 'epochs' is invalid: Input should be greater than or equal to 1\.",
    )
    refused(lambda: load_trainer("keras"), r"trainer 'keras' is neither built in \(ultralytics\) nor 'package\.module")
    refused(
        lambda: load_trainer("no_such_module_here:T"), r"trainer 'no_such_module_here:T' cannot be loaded: No module"
    )
    folders = RunFolders(tmp_path / "training")
    refused(lambda: interrupted_run(folders, "run_1"), r"cannot resume run_1: there is no weights/last\.pt in ")
    finished = tmp_path / "training/run_2"
    (finished / "weights").mkdir(parents=True)
    (finished / "weights/last.pt").write_bytes(b"")
    (finished / SUMMARY_FILE).write_text("{}")
    refused(lambda: interrupted_run(folders, "run_2"), "cannot resume run_2: that training finished; start a new one")
    refused(_tracked_run, "the deployment pipeline needs MLflow tracking .*remove 'deployment' from tracking")
    evaluation = section_parameters("evaluation")
    refused(
        lambda: select_models(None, None, folders, evaluation),  # type: ignore[arg-type]
        "the evaluation pipeline needs MLflow tracking .*remove 'evaluation' from tracking",
    )
    no_path = SimpleNamespace(run_id="r1", lineage={}, summary={})
    refused(lambda: _export_of(no_path, project), r"training run r1 recorded no export path \(data\.export_path\)")  # type: ignore[arg-type]
    gone = SimpleNamespace(
        run_id="r1",
        lineage={"export_path": "data/exports/demo_v1", "label_set": "demo", "export_version": 1},
        summary={},
    )
    refused(lambda: _export_of(gone, project), "the export training run r1 was trained on is gone: .*evaluate a newer")  # type: ignore[arg-type]
    refused(
        lambda: _check_pinned_export(SimpleNamespace(version=2), SimpleNamespace(export_version=3)),  # type: ignore[arg-type]
        r"training\.export_version is 3 but the catalog's yolo_export loaded version 2; pin it on the command line",
    )
    evaluated_gone = SimpleNamespace(run_id="r1", summary={"export_path": "data/exports/gone_v1"})
    refused(
        lambda: check_serving_parity(PackagedModel(model_uri="runs:/x/model"), evaluated_gone, section_parameters("deployment")),  # type: ignore[arg-type]
        r"the export the evaluation of run r1 measured \(data/exports/gone_v1\) is gone, so the packaged model cannot",
    )


def test_the_export_dataset_refuses_a_label_set_that_escapes_and_writes_nothing(project):
    """Past the parameters (a catalog entry written by hand), the writer's own check still holds."""
    from types import SimpleNamespace

    import pandas as pd

    from cv_pipelines.datasets.yolo_export_dataset import ExportDatasetError, YoloExportDataset

    plan = SimpleNamespace(label_set="../../evil", images=pd.DataFrame({"path": []}))
    build = SimpleNamespace(plan=plan, source_rev=None, lineage={}, health_files={})
    with pytest.raises(ExportDatasetError, match=r"would put its export outside .*\(nothing was written\)$"):
        YoloExportDataset(path="data/exports", label_set="../../evil").save(build)  # type: ignore[arg-type]
    assert not (project / "data/exports").exists() and not list(project.parent.glob("evil*"))


def test_the_catalog_passes_a_datasets_sentence_through_and_wraps_anything_else():
    """Kedro wraps what a dataset raises in DatasetError twice; the project's catalog unwraps sentences only."""
    from kedro.io import AbstractDataset, DatasetError

    from cv_pipelines.datasets.catalog import ProjectDataCatalog
    from cv_pipelines.errors import ConfigurationError, ExternalServiceError

    class Failing(AbstractDataset):
        def __init__(self, error: Exception) -> None:
            self.error = error

        def load(self):
            raise self.error

        def save(self, data) -> None:
            raise self.error

        def _describe(self) -> dict:
            return {}

    sentence, service, other = ConfigurationError("fix x"), ExternalServiceError("remote down"), ValueError("bug")
    catalog = ProjectDataCatalog({"sentence": Failing(sentence), "service": Failing(service), "other": Failing(other)})
    for name, error in (("sentence", sentence), ("service", service)):
        with pytest.raises(type(error)) as raised:
            catalog.load(name)
        assert raised.value is error
        with pytest.raises(type(error)) as raised:
            catalog.save(name, 1)
        assert raised.value is error
    with pytest.raises(DatasetError, match="other: Failed while loading data") as raised:
        catalog.load("other")
    assert raised.value.__cause__.__cause__ is other  # everything else keeps Kedro's wrapping
    with pytest.raises(DatasetError, match="other: Failed while saving data"):
        catalog.save("other", 1)
