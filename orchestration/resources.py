"""Resources, each built by a small factory."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster import ConfigurableResource
from dagster_dbt import DbtProject

from engage.settings import Settings

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


class EngageResource(ConfigurableResource):
    """engage's settings (ENGAGE_* environment variables) for the assets."""

    home: str | None = None  # override ENGAGE_HOME, e.g. in tests

    def settings(self) -> Settings:
        settings = Settings(home=Path(self.home)) if self.home else Settings()
        settings.ensure_dirs()
        # dbt's profile reads the warehouse and marts paths and the memory limit from the environment.
        os.environ["ENGAGE_WAREHOUSE_PATH"] = str(settings.warehouse_path)
        os.environ["ENGAGE_MARTS_PATH"] = str(settings.marts_path)
        os.environ["ENGAGE_PIPELINE_MEMORY_LIMIT"] = settings.pipeline_memory_limit
        return settings


def _dbt_on_path() -> None:
    """dagster-dbt looks for `dbt` on PATH; make it the one of this interpreter's virtualenv."""
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")


# What dbt parses; the manifest is stale when any of these is newer (the Makefile's rule, too).
DBT_SOURCE_SUFFIXES = {".sql", ".yml", ".yaml", ".csv", ".md"}
DBT_OUTPUT_DIRS = {"target", "logs", "dbt_packages"}


def newest_dbt_source_mtime(project_dir: Path = DBT_PROJECT_DIR) -> float:
    newest = 0.0
    for root, dirs, files in os.walk(project_dir):
        if root == str(project_dir):
            dirs[:] = [d for d in dirs if d not in DBT_OUTPUT_DIRS]
        for name in files:
            if Path(name).suffix in DBT_SOURCE_SUFFIXES:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
    return newest


def manifest_is_current(project: DbtProject) -> bool:
    try:
        built = project.manifest_path.stat().st_mtime
    except FileNotFoundError:
        return False
    return built >= newest_dbt_source_mtime(Path(project.project_dir))


def build_dbt_project(force_parse: bool = False) -> DbtProject:
    """The dbt project, its manifest parsed only when missing or older than the dbt sources.

    Not `prepare_if_dev()`: `dagster dev` sets DAGSTER_IS_DEV_CLI for every process it starts,
    run workers included, and a `dbt parse` at each run worker's start cost ~9 s of every
    refresh (docs/INGESTION.md, "Freshness"). Edits to the SQL or YAML are still picked up: the
    first process that loads the definitions after an edit re-parses."""
    _dbt_on_path()
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    if force_parse or not manifest_is_current(project):
        project.preparer.prepare(project)
    return project


def build_engage_resource() -> EngageResource:
    return EngageResource()
