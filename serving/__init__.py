"""engage's HTTP API (FastAPI): Tinybird-compatible pipes over the published snapshot.

Layout:
    app.py        create_app(settings) -> FastAPI: wires settings, snapshots, tokens, errors, routers
    server.py     serve(host, port, settings): uvicorn with token-redacting access logs
    pipes.py      every pipe declared ONCE (params, filters, columns, query) -> routes, validation, OpenAPI, docs
    params.py     query-string parsing: the contract's accepted forms and 400 messages
    query.py      the window split (hourly edges + daily middle) and SQL building blocks
    formats.py    json / csv / ndjson / parquet rendering of a result
    snapshots.py  the CURRENT snapshot, opened read-only once per file, one cursor per request
    auth.py       admin + scoped tokens (TOML), constant-time comparison, scope checks
    errors.py     ApiError and the single error handler ({"error", "documentation"})
    middleware.py X-Request-ID / X-Engage-Snapshot / X-Engage-Watermark on every response
    logs.py       logging filter that redacts token= values
    deps.py       FastAPI dependencies (settings, snapshots, auth)
    openapi.py    OpenAPI documents (/v0/pipes/openapi.json, /openapi.json)
    docs.py       the pipe reference of docs/API.md, generated (`python -m serving.docs`)
    routers/      health.py, pipes.py (events.py: the events API, to come)
"""
