"""The cloud Container Registry, seen from the mirror: the REST client (paging, auth,
retries, rate limit) and, in ``simulator/``, a faithful fake of it."""
