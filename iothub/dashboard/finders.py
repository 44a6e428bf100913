"""A staticfiles finder that serves plotly.js from the installed `plotly` package.

The chart library comes from PyPI at install time (`plotly` in requirements.txt ships the
minified plotly.js), so it is never copied into the repository and needs no Node.js anywhere:
`pip install` brings it for `scripts/run`, the tests, CI and the Docker image alike. Only the one
file is exposed (as `vendor/plotly/plotly.min.js`); the package's other data (datasets, the
Jupyter widget bundle) is neither served nor collected.
"""

import importlib.util
from pathlib import Path

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PREFIX = "vendor/plotly"
FILENAME = "plotly.min.js"
STATIC_PATH = f"{PREFIX}/{FILENAME}"


def plotly_package_data() -> Path | None:
    """The `package_data` folder of the installed plotly, found without importing the package."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "package_data"


class PlotlyJsFinder(BaseFinder):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        folder = plotly_package_data()
        self.available = folder is not None and (folder / FILENAME).is_file()
        self.storage = FileSystemStorage(location=str(folder or "."))
        # collectstatic and WhiteNoise put a storage's files under its `prefix`.
        self.storage.prefix = PREFIX

    def check(self, **kwargs):
        if self.available:
            return []
        return [
            Error(
                "plotly.js was not found: the dashboard's charts need the `plotly` package.",
                hint="pip install -r requirements.txt",
                id="dashboard.E001",
            )
        ]

    def find(self, path, find_all=False, **kwargs):
        if self.available and path == STATIC_PATH:
            match = self.storage.path(FILENAME)
            return [match] if find_all else match
        return []

    def list(self, ignore_patterns):
        if self.available:
            yield FILENAME, self.storage
