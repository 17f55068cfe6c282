"""Lists the sub-packages of the folders that install under the ``dockyard`` name, and
builds the vault's one C extension.

pyproject.toml maps ``cloud/`` to ``dockyard.cloud`` and ``agent/`` to ``dockyard.agent``;
setuptools still needs every sub-package named, which static configuration cannot find
under a new prefix. The chunker's scan is C (``agent/vault/_cdc.c``) because no package on
PyPI takes a key-derived gear table (see agent/vault/README.md for the measurements).
"""

from setuptools import Extension, find_packages, setup

packages = []
for folder in ("cloud", "agent"):
    packages.append(f"dockyard.{folder}")
    packages.extend(f"dockyard.{folder}.{name}" for name in find_packages(folder))

setup(
    packages=packages,
    ext_modules=[
        Extension(
            "dockyard.agent.vault._cdc",
            ["agent/vault/_cdc.c"],
            extra_compile_args=["-O3", "-std=c11", "-Wall"],
        )
    ],
)
