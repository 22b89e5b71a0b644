"""The mirror's gRPC API: the cloud's ImageService and OperationService, endpoint
discovery, health and reflection on one listener beside the HTTP API.

A thin layer over the readers the REST handlers use (``mirror.api``): the same
queries, validation, page tokens and errors, so the two protocols cannot disagree.
"""
