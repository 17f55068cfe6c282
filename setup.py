"""Lists the sub-packages of the folders that install under the ``dockyard`` name.

pyproject.toml maps ``cloud/`` to ``dockyard.cloud`` and ``agent/`` to ``dockyard.agent``;
setuptools still needs every sub-package named, which static configuration cannot find
under a new prefix.
"""

from setuptools import find_packages, setup

packages = []
for folder in ("cloud", "agent"):
    packages.append(f"dockyard.{folder}")
    packages.extend(f"dockyard.{folder}.{name}" for name in find_packages(folder))

setup(packages=packages)
