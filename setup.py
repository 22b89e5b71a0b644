"""The C part of the package: ``mirror._image_wire`` (the rest is in pyproject.toml).

Optional: without a C compiler the package installs and ``mirror.image_wire``
encodes in Python (slower); ``tests/unit/test_image_wire.py`` fails under
``CI=true`` when the module is missing, so CI never runs the slow path unnoticed.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "mirror._image_wire",
            sources=["mirror/_image_wire.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
