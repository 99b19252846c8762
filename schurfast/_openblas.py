"""Loads the LAPACK/BLAS library of the ``scipy-openblas32`` wheel before the compiled core.

The core is linked against ``libscipy_openblas.so`` by name. An installed package finds it
through its run path; an editable install or another layout finds it here, already loaded.
"""

import ctypes
import os

import scipy_openblas32


def preload() -> None:
    path = os.path.join(scipy_openblas32.get_lib_dir(), "libscipy_openblas.so")
    if os.path.exists(path):
        ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
