"""The whole mirror in one process: ``mirror run`` (production) and ``mirror demo``.

``mirror.runner.app`` is the composition root: it opens every resource, starts
the ingest loop, the relay and the API, and stops them in reverse order.
``mirror.runner.demo`` adds the in-process simulator and the demo's welcome.
"""
