"""The fast tier picks itself: tests that start servers (by a fixture, a helper of theirs or a library call of
ours) are e2e without anyone marking them, and a fast test that listens on a socket anyway fails loudly."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SAMPLE = '''
import socket

import pytest

from b24app.sandbox.tbank.testing import Receiver


def _helper():
    from b24app.sandbox.server import serve_in_thread
    return serve_in_thread


@pytest.fixture
def on_top_of_stack(stack):
    return stack


def test_pure():
    assert 1 + 1 == 2


def test_uses_stack(stack):
    pass


def test_uses_a_fixture_on_top_of_stack(on_top_of_stack):
    pass


def test_calls_a_helper_that_serves():
    _helper()


def test_uses_a_class_of_ours_that_serves():
    Receiver


def test_listens_without_saying_so():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        getattr(s, "li" + "sten")()


@pytest.mark.e2e
def test_marked_by_hand():
    pass
'''


def _pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           "-c", str(REPO / "pyproject.toml"), *args, str(tmp_path / "test_sample.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": f"{REPO}{':' + str(REPO / 'tests')}", "PATH": "/usr/bin:/bin"})


def test_only_tests_that_start_no_server_are_fast_and_one_that_listens_fails(tmp_path):
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_sample.py").write_text(SAMPLE, encoding="utf-8")
    collected = _pytest(tmp_path, "--collect-only", "-m", "fast")
    fast = {line.split("::")[-1] for line in collected.stdout.splitlines() if "::" in line}
    assert fast == {"test_pure", "test_listens_without_saying_so"}, collected.stdout + collected.stderr

    ran = _pytest(tmp_path, "-m", "fast")
    assert "1 failed, 1 passed" in ran.stdout, ran.stdout
    assert "test_listens_without_saying_so is in the fast tier but starts a server" in ran.stdout
