"""Build hook for the C scheduling core; the project's metadata lives in pyproject.toml.

cffi's setuptools plugin compiles ``cicd.scheduling.core._native`` from the build
script named here, for ``pip install .``, ``pip install -e .`` and
``python3 setup.py build_ext --inplace``.
"""

from setuptools import setup

setup(cffi_modules=["cicd/scheduling/core/build.py:ffibuilder"])
