"""Walking the upstream into the index: scopes walked concurrently under leases,
pages merged set-based with their change events, deletions confirmed upstream.

Entry points: ``ingest_once`` (one pass over some scopes) and ``run_ingest_loop``
(a pass every interval until stopped) in ``mirror.ingest.loop``; the command is
``mirror.ingest.cli:ingest_command``.
"""
