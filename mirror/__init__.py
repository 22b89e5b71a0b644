"""registry-mirror: a local mirror and index of a cloud Container Registry."""

import os

# gRPC's fork support (fork handlers in its C core) is for children that go on using
# gRPC; this process only forks to exec other programs (pg_ctl, initdb, java), and with
# the handlers installed such a child crashed before its exec (pg_ctl "died with
# SIGSEGV" when PostgreSQL was restarted under a live gRPC server:
# tests/integration/test_grpc_health_metrics.py). Read by grpc when it is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
