"""The Functions host's own Python worker indexes the app: what it refuses, Azure refuses.

The worker for Python 3.13 (`azure-functions-runtime`) runs in a 3.13 virtualenv of its own
(`devhost.worker_env`), built on first use and cached; without a Python 3.13 these tests
fail and say how to get one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from devhost import worker_env
from devhost.host import indexed_functions
from function_app import app

APPS = Path(__file__).resolve().parent / "apps"
# Building the worker's environment (when `make install` has not, or the requirements changed)
# takes minutes on a fresh machine; the fixture's time counts towards each test's timeout.
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="session")
def worker_python() -> Path:
    try:
        return worker_env.ensure(progress=False)
    except worker_env.WorkerEnvError as error:
        pytest.fail(f"cannot run the Functions worker's indexing: {error}")


def test_the_worker_loads_every_function_of_the_app(worker_python: Path) -> None:
    verdict = worker_env.check(python=worker_python)
    assert verdict.refused == {}, worker_env.describe(verdict)
    assert sorted(verdict.loaded) == sorted(f.get_function_name() for f in indexed_functions(app))
    assert verdict.worker.startswith("azure-functions-runtime ")


def test_the_worker_refuses_a_builtin_generic_output_annotation(worker_python: Path) -> None:
    verdict = worker_env.check(APPS, "builtin_generic_app.py", python=worker_python)
    assert not verdict.ok and verdict.loaded == []
    assert "invalid non-type annotation" in verdict.refused["refused"]
    assert "refused: FunctionLoadError" in worker_env.describe(verdict)


def test_the_local_runner_refuses_to_serve_what_the_worker_refuses(worker_python: Path) -> None:
    started = subprocess.run([sys.executable, "-m", "devhost", "--app", "tests.apps.builtin_generic_app", "--sandbox",
                              "--port", "0", "--graph-port", "0", "--anny-port", "0", "--azurite-port", "0"],
                             cwd=worker_env.ROOT, capture_output=True, text=True, timeout=120)
    assert started.returncode == 1
    assert "refuses 1 function(s)" in started.stdout
    assert "refused: FunctionLoadError: cannot load the refused function" in started.stdout


def test_the_local_runner_says_in_one_line_when_it_cannot_check(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(worker_env, "VENV", tmp_path / "no-worker-env")
    may_serve, line = worker_env.preflight("function_app")
    assert may_serve
    assert line.startswith("Functions worker check skipped: its Python 3.13 environment is not built")
    assert "\n" not in line
