"""Package discovery for setuptools; everything else lives in pyproject.toml.

The project keeps Lightning callbacks in the top-level ``callbacks/`` folder, but installs them as
``golf_lit.callbacks`` (no top-level ``callbacks`` package in site-packages). pyproject.toml's package discovery
cannot map one folder to another package name while still discovering the rest, so it is done here.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["golf_lit", "golf_lit.*"]), "golf_lit.callbacks"],
    package_dir={"golf_lit.callbacks": "callbacks"},
)
