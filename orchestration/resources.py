"""Resources, each built by a small factory."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dagster import ConfigurableResource
from dagster_dbt import DbtCliResource, DbtProject

from engage.settings import Settings

DBT_PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


class EngageResource(ConfigurableResource):
    """engage's settings (ENGAGE_* environment variables) for the assets."""

    home: str | None = None  # override ENGAGE_HOME, e.g. in tests

    def settings(self) -> Settings:
        settings = Settings(home=Path(self.home)) if self.home else Settings()
        settings.ensure_dirs()
        # dbt's profile reads the warehouse path from the environment.
        os.environ["ENGAGE_WAREHOUSE_PATH"] = str(settings.warehouse_path)
        return settings


def build_dbt_project() -> DbtProject:
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        # A fresh checkout outside `dagster dev` (tests, `engage ingest`): parse once.
        project.preparer.prepare(project)
    return project


def build_dbt_resource(project: DbtProject) -> DbtCliResource:
    # The dbt next to this interpreter (the project's virtualenv), whatever PATH says.
    beside_python = Path(sys.executable).parent / "dbt"
    executable = str(beside_python) if beside_python.exists() else (shutil.which("dbt") or "dbt")
    return DbtCliResource(project_dir=project, dbt_executable=executable)


def build_engage_resource() -> EngageResource:
    return EngageResource()
