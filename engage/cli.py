"""The `engage` command: ingest, serve, generate."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from engage.settings import Settings


def _configure_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)


def run_refresh(settings: Settings, job_name: str = "refresh_job"):
    """Run the refresh job in this process, through the same Dagster job the sensor launches."""
    from engage.dagster_home import ensure_dagster_home

    settings.ensure_dirs()
    ensure_dagster_home(settings)
    from engage.locking import refresh_lock
    from engage.snapshots import restore_marts_quietly
    from orchestration.definitions import defs
    from orchestration.pooled_storage import open_pooled_instance

    job = defs.resolve_job_def(job_name)
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with refresh_lock(settings.refresh_lock_path, holder="engage ingest"), \
            open_pooled_instance(str(settings.dagster_home)) as instance:
        result = job.execute_in_process(instance=instance, run_config=quiet, raise_on_error=False)
        restore_marts_quietly(settings)  # for the next build, and dbt run by hand
        return result


def cmd_ingest(args: argparse.Namespace) -> int:
    settings = Settings()
    started = time.perf_counter()
    result = run_refresh(settings, "rebuild_job" if args.full_refresh else "refresh_job")
    seconds = time.perf_counter() - started
    load = {}
    for mat in result.asset_materializations_for_node("load_landing_files"):
        if mat.asset_key.path == ["raw", "user_events"]:
            load = {k: v.value for k, v in mat.metadata.items()}
    if not result.success:
        failed = [e.step_key for e in result.all_events if e.is_step_failure]
        print(f"engage ingest: FAILED in step(s) {', '.join(failed) or '?'} after {seconds:.1f} s; "
              "the last published snapshot keeps serving. See the logs above.", file=sys.stderr)
        return 1
    print(
        f"engage ingest: files={load.get('files_loaded', 0)} (duplicates skipped={load.get('files_duplicate', 0)}) "
        f"rows_loaded={load.get('rows_loaded', 0)} rows_quarantined={load.get('rows_quarantined', 0)} "
        f"seconds={seconds:.1f}"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import serve

    serve(host=args.host, port=args.port)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from engage.generate import generate

    summary = generate(
        events=args.events, days=args.days, seed=args.seed, out=Path(args.out),
        bad_rows=args.bad_rows, late_files=args.late_files, progress=True,
    )
    print(f"engage generate: files={summary['files']} events={summary['events']} "
          f"bad_rows={summary['bad_rows']} out={args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="engage", description="Exact, self-hosted user-engagement analytics.")
    sub = parser.add_subparsers(dest="command", required=True)

    ingest = sub.add_parser("ingest", help="load pending landing files, refresh and publish the marts now")
    ingest.add_argument("--full-refresh", action="store_true", help="rebuild every mart from raw (the daily job)")
    ingest.set_defaults(func=cmd_ingest)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.set_defaults(func=cmd_serve)

    gen = sub.add_parser("generate", help="write realistic synthetic events as landing files")
    gen.add_argument("--events", type=int, required=True)
    gen.add_argument("--days", type=int, default=30)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", required=True, help="folder to write into (e.g. $ENGAGE_HOME/landing)")
    gen.add_argument("--bad-rows", type=float, default=0.0, help="fraction of invalid lines to add")
    gen.add_argument("--late-files", type=int, default=0, help="extra files of late (older) events")
    gen.set_defaults(func=cmd_generate)
    return parser


def main(argv: list[str] | None = None) -> int:
    _configure_logging()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
