"""Real backing services for tests and development, run as local processes (no Docker)."""
