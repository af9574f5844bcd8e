"""What the tests share, one idea per module; ``eventually`` is re-exported here.

- ``polling``: ``eventually()``, the one wait on a condition.
- ``processes``: server processes on loopback (free port, wait until serving, stop).
- ``api``: in-process API clients acting with one key, and ``bearer``.
- ``live``: a uvicorn server process with keys of two organizations.
- ``reliability``: crashable uvicorn processes, keys made on a database, bounded sizes.
- ``stream_client``: one SSE connection read in a thread; a uvicorn server in a thread.
- ``tcpproxy``: a TCP proxy a test can cut or silence.
- ``cli``: the ``agentguard`` command run as a subprocess, and ``agentguard serve``.
- ``db_rows``: rows written straight to the database.
- ``pg_cluster``: a private PostgreSQL cluster that a test may stop and restart.
- ``event_loop``: ``beside_a_ticker()``, whether a call blocks the event loop.
- ``browser``: Debian's Chromium through playwright, with the launch flags CI needs.
- ``services``: gates that skip (or, in CI, fail) a test whose PostgreSQL or Chromium is missing.
- ``fuzzing``: the rules of valid input no schema states, for the schemathesis runs.

The package is found as ``support`` because pytest's ``pythonpath = ["tests"]`` (pyproject.toml)
puts tests/ on sys.path before any conftest loads; see the comment there.
"""

from support.polling import eventually

__all__ = ["eventually"]
