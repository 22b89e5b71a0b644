"""registry-mirror: a local mirror and index of a cloud Container Registry."""
