"""Build hook: compiles leech.c into lpm/_native/ as a plain shared library,
and ships lpm-autostart.pth at the top of site-packages.

The library is loaded with ctypes, never imported, so it carries no PyInit
function; setuptools' Extension machinery is used only because it finds the
interpreter's headers and compiler flags on every supported CPython.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

PTH = "lpm-autostart.pth"


class build_py_with_pth(build_py):
    """Copies the .pth that implements LPM_AUTOSTART next to the package."""

    def run(self) -> None:
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode: bool = True) -> list:
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH)]


setup(
    cmdclass={"build_py": build_py_with_pth},
    ext_modules=[
        Extension(
            "lpm._native._leech",
            sources=["leech.c"],
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-fvisibility=hidden"],
        )
    ],
)
