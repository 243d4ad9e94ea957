"""An operator's install: build the wheel, install it into a fresh virtualenv outside the checkout, run it.

The wheel must carry the top-level templates/, static/, manifest.json (and the contract fixtures `b24app probe`
reads): with no checkout and no PYTHONPATH, `b24app demo` links the banks through rendered pages, and the
app serves its static files, reads the manifest and translates its pages.

Offline: the wheel is built with this interpreter's setuptools when it can build wheels (setuptools >= 70.1,
or the `wheel` package beside it), else with pip's build isolation from pip's configured index; the new
virtualenv gets no pip and no downloads: the wheel is installed by this pip (`--python`, `--no-deps`), and
its dependencies are this environment's site-packages, reached through a .pth file.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# What is not source: a build of the copy must not see another build, a venv or caches.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
                                    "_files", "var", ".demo", "out", "node_modules", "*.sqlite3*")

RENDER = """
import json, sys, tempfile
from pathlib import Path
import b24app
from b24app import create_app
from b24app.manifest import Manifest
from b24app.contracts import load_contracts
data = Path(tempfile.mkdtemp())
app = create_app(mode="test", data_dir=str(data), database_url=f"sqlite:///{data / 'db.sqlite3'}")
client = app.test_client()
css = client.get("/static/b24app.css")
page = client.get("/app?LANG=ru")
print(json.dumps({"package": b24app.__file__, "css": [css.status_code, css.get_data(as_text=True)],
                  "page": [page.status_code, page.get_data(as_text=True)], "manifest": Manifest.load().code,
                  "contracts": len(load_contracts()), "path": sys.path}))
"""


def _setuptools_builds_wheels() -> bool:
    import setuptools

    major, minor = (int(part) for part in setuptools.__version__.split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def _run(argv, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{argv[:3]} exited {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds from a copy of this checkout (pip builds in the source tree: keep ours clean)."""
    source = tmp_path_factory.mktemp("source") / "b24app"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("dist")
    argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)]
    if _setuptools_builds_wheels():
        argv.insert(4, "--no-build-isolation")
    _run(argv, timeout=300)
    (built,) = out.glob("b24app-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh virtualenv outside the checkout with only the wheel installed; dependencies come from ours."""
    home = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", "--without-pip", str(home)], timeout=120)
    python = home / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--quiet",
          str(wheel)], env=_clean_env(), timeout=300)  # with PYTHONPATH at a checkout pip sees it "installed"
    purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "b24app_test_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n", encoding="utf-8")
    return home


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH and no B24APP_* settings from the test run: only what an operator's shell would have."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("B24APP_")}


def test_the_wheel_holds_every_template_static_file_and_the_manifest(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"b24app/_files/{path.relative_to(REPO).as_posix()}" for top in ("templates", "static")
                for path in (REPO / top).rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    expected |= {"b24app/_files/manifest.json"}
    expected |= {f"b24app/_files/contracts/{path.name}" for path in (REPO / "tests" / "contracts").glob("*.json")}
    assert expected and not expected - names, sorted(expected - names)[:10]
    assert not any(name.startswith(("templates/", "static/", "tests/")) for name in names)  # nothing top-level


def test_an_installed_wheel_runs_the_demo_outside_the_checkout(venv, tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    cli = str(venv / "bin" / "b24app")
    help_text = _run([cli, "--help"], cwd=cwd, env=_clean_env(), timeout=60).stdout
    assert "demo" in help_text and "serve" in help_text

    demo = subprocess.run([cli, "demo", "--base-port", "0", "--data-dir", str(tmp_path / "data"),
                           "--exit-after-ready"], cwd=cwd, env=_clean_env(), capture_output=True, text=True,
                          timeout=240)
    out = demo.stdout
    assert demo.returncode == 0, f"{out[-3000:]}\n{demo.stderr[-3000:]}"
    assert "installFinish seen" in out  # the manifest's placements and events were registered
    assert "Tochka linked by its consent flow" in out and "T-Bank linked by SMS" in out  # rendered link pages
    assert "→ invoice 1207 paid after" in out and "underpaid" in out and "→ invoice 1208 paid after" in out
    assert "demo ready" in out


def test_an_installed_wheel_serves_its_static_files_and_translated_pages(venv, tmp_path):
    done = _run([str(venv / "bin" / "python"), "-c", RENDER], cwd=tmp_path, env=_clean_env(), timeout=120)
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["package"].startswith(str(venv)), seen["package"]  # the wheel's copy, not this checkout
    assert str(REPO) not in seen["path"], seen["path"]  # ("" is the cwd, a temporary directory)
    assert seen["css"] == [200, (REPO / "static" / "b24app.css").read_text(encoding="utf-8")]
    status, page = seen["page"]
    assert status == 400 and "Откройте эту страницу из Битрикс24" in page  # error.html, through the ru catalog
    assert seen["manifest"] == json.loads((REPO / "manifest.json").read_text(encoding="utf-8"))["code"]
    assert seen["contracts"] == len(list((REPO / "tests" / "contracts").glob("*.json")))
