"""What the wheel holds: the engine's packages, found (a new sub-package cannot be left out), and the
folders the repository keeps at its top, mapped into the package - ``assets/`` (the default task),
``pages/`` (the app's pages, beside the router that names them) and ``.streamlit/`` (the app's settings) - so an installed slsviz runs
its app from any folder. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

MAPPED = {"slsviz.assets": "assets", "slsviz.app.pages": "pages", "slsviz.streamlit_config": ".streamlit"}

# Namespace discovery: a folder of data (slsviz/schemas) is a package without an __init__.py.
FOUND = find_namespace_packages(include=["slsviz", "slsviz.*"], exclude=["*.__pycache__"])
setup(packages=[*FOUND, *MAPPED], package_dir=MAPPED)
