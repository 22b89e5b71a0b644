"""The local API (aiohttp): the upstream's List/Get/Delete from the index, and the mirror's own.

``create_app`` lives in ``mirror.api.app``; the typed state keys in ``mirror.api.appkeys``.
"""
