"""Contract tests: the upstream ImageService behaviour, runnable against any compatible API."""
