"""Build hook: compiles leech.c into lpm/_native/ as a plain shared library.

The library is loaded with ctypes, never imported, so it carries no PyInit
function; setuptools' Extension machinery is used only because it finds the
interpreter's headers and compiler flags on every supported CPython.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "lpm._native._leech",
            sources=["leech.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"],
        )
    ]
)
