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
        # dbt's profile reads the warehouse and marts paths from the environment.
        os.environ["ENGAGE_WAREHOUSE_PATH"] = str(settings.warehouse_path)
        os.environ["ENGAGE_MARTS_PATH"] = str(settings.marts_path)
        return settings


def _dbt_on_path() -> None:
    """dagster-dbt looks for `dbt` on PATH; make it the one of this interpreter's virtualenv."""
    venv_bin = str(Path(sys.executable).parent)
    if venv_bin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = venv_bin + os.pathsep + os.environ.get("PATH", "")


def build_dbt_project() -> DbtProject:
    _dbt_on_path()
    project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        # A fresh checkout outside `dagster dev` (tests, `engage ingest`): parse once.
        project.preparer.prepare(project)
    return project


def build_engage_resource() -> EngageResource:
    return EngageResource()
