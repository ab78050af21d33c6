"""The Functions host's own Python worker indexes the app: what it refuses, Azure refuses.

The worker for Python 3.13 (`azure-functions-runtime`) runs in a 3.13 virtualenv of its own
(`devhost.worker_env`), built on first use and cached; without a Python 3.13 these tests
fail and say how to get one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devhost import worker_env
from devhost.host import indexed_functions
from function_app import app

APPS = Path(__file__).resolve().parent / "apps"


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
