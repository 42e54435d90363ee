"""`python -m engage.dbt_manifest`: parse the dbt project into target/manifest.json (used by make)."""

from __future__ import annotations

import os


def main() -> None:
    os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    from orchestration.resources import DBT_PROJECT_DIR, build_dbt_project

    project = build_dbt_project(force_parse=True)
    print(f"dbt manifest ready: {project.manifest_path.relative_to(DBT_PROJECT_DIR.parent)}")


if __name__ == "__main__":
    main()
