"""Run the API with uvicorn (``engage serve``)."""

from __future__ import annotations

import uvicorn

from engage.settings import Settings
from serving.app import create_app
from serving.logs import uvicorn_log_config


def serve(host: str = "127.0.0.1", port: int = 8000, settings: Settings | None = None) -> None:
    """Serve the API until interrupted. Access logs go through RedactTokens (no token is logged)."""
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_config=uvicorn_log_config(), proxy_headers=False,
                server_header=False)
