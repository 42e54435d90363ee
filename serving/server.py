"""Run the API with uvicorn (``engage serve``)."""

from __future__ import annotations

import uvicorn

from engage.settings import Settings
from serving.app import create_app
from serving.deps import default_settings
from serving.logs import uvicorn_log_config


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the API until interrupted. Access logs go through RedactTokens (no token is logged).

    On the very first start without ``ENGAGE_ADMIN_TOKEN``, the admin token is generated, stored in
    ``$ENGAGE_HOME/admin_token`` (owner-only) and printed once to stdout (CONTRACT.md section 4).
    """
    settings = settings or default_settings()
    generated = settings.admin_token is None and not settings.admin_token_path.exists()
    app = create_app(settings)
    if generated:
        print(
            f"engage: generated the admin token, stored in {settings.admin_token_path}:\n"
            f"  {settings.resolved_admin_token()}",
            flush=True,
        )
    print(f"engage: serving http://{host}:{port} (docs: http://{host}:{port}/docs)", flush=True)
    uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config(), proxy_headers=False,
                server_header=False)
