"""Build description of the one compiled extension, posfast._core.

Cython runs inside build_ext so that `pip install .` and an sdist build the same
way.  POSFAST_DEBUG=1 turns bounds/wraparound checks back on and compiles with
-O0 -g (CI runs the suite once that way); POSFAST_ANNOTATE=1 writes the Cython
HTML annotation next to the sources.
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("POSFAST_DEBUG", "") not in ("", "0")
ANNOTATE = os.environ.get("POSFAST_ANNOTATE", "") not in ("", "0")

C_SOURCES = ["src/pf_crc32c.c", "src/pf_sha256.c"]
DEPENDS = [
    "src/pf_format.h", "src/pf_io.h", "src/pf_crc32c.h", "src/pf_sha256.h",
    "src/includes/pf.pxd", "src/ring.pxi", "src/bulk.pxi", "src/record.pxi", "src/checksum.pxi",
]


def _compile_args():
    if sys.platform == "win32":
        return ["/O2"] if not DEBUG else ["/Od", "/Zi"]
    args = ["-std=c99", "-O0", "-g"] if DEBUG else ["-std=c99", "-O3"]
    return args + ["-fno-strict-aliasing", "-Wno-unused-function"]


class CythonBuildExt(build_ext):
    def finalize_options(self):
        from Cython.Build import cythonize

        directives = {
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "cdivision": not DEBUG,
            "initializedcheck": DEBUG,
            "embedsignature": True,
        }
        self.distribution.ext_modules[:] = cythonize(
            self.distribution.ext_modules,
            compiler_directives=directives,
            annotate=ANNOTATE,
            include_path=["src", "src/includes"],
        )
        super().finalize_options()


setup(
    ext_modules=[
        Extension(
            "posfast._core",
            sources=["src/_core.pyx"] + C_SOURCES,
            depends=DEPENDS,
            include_dirs=["src"],
            # 64-bit off_t on 32-bit CPUs too (armv7l glibc): Python's pyconfig.h sets it,
            # said again here for the C files that do not include Python.h; pf_io.h checks it
            define_macros=[] if sys.platform == "win32" else [("_FILE_OFFSET_BITS", "64")],
            extra_compile_args=_compile_args(),
        )
    ],
    cmdclass={"build_ext": CythonBuildExt},
)
