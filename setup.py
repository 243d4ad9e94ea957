"""Ship the repository's top-level templates/, static/, manifest.json and tests/contracts/ inside the package.

They stay at the top of the repository (their source); a build copies them into `b24app/_files/` of the built
package, where `b24app.resources.resource_path` finds them in an installed wheel. An editable install or a
checkout on PYTHONPATH reads them in place, so nothing is copied into the source tree. Everything else about
the package is in pyproject.toml.
"""
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# kept in step with b24app.resources.SHIPPED (tests/test_wheel.py checks the wheel holds each one)
SHIPPED = {"templates": "templates", "static": "static", "manifest.json": "manifest.json",
           "contracts": "tests/contracts"}


class BuildWithFiles(build_py):
    """build_py, plus a copy of the top-level files into build/lib/b24app/_files (not in editable mode)."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "b24app" / "_files"
        for name, source in SHIPPED.items():
            source, dest = HERE / source, target / name
            if source.is_dir():
                shutil.copytree(source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest)


setup(cmdclass={"build_py": BuildWithFiles})
