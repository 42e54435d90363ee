"""HTTP routers, one per area: ``health`` (/health, /ready), ``pipes`` (/v0/pipes/...).

The events API (``POST /v0/events``, CONTRACT.md section 1) will be ``routers/events.py`` exposing
``router``; add it to ``ROUTERS`` in ``serving/app.py``. It authorizes with
``Depends(require_scopes(APPEND_USER_EVENTS))`` from ``serving.deps`` / ``serving.auth`` and raises
``ApiError`` for its 400/404/413 answers.
"""
