"""The Python 3.13 environment that holds the Functions host's own Python worker.

The worker for Python 3.13 (`azure-functions-runtime`) does not install on 3.11, where the
rest of the tooling runs, so it gets a virtualenv of its own (`.venv-3.13`, with the dev
requirements too, so the end-to-end tests can also run on 3.13). `make install` builds it,
the worker-indexing test builds it when missing, and `python -m devhost` checks the app
with it before serving.

    python -m devhost.worker_env ensure    # build or refresh the environment
    python -m devhost.worker_env python    # print its interpreter
    python -m devhost.worker_env check     # index function_app.py with the worker
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKER_PYTHON = "3.13"
VENV = ROOT / f".venv-{WORKER_PYTHON}"
REQUIREMENTS = (ROOT / "requirements-dev.txt", ROOT / "requirements-worker.txt")
INDEX_SCRIPT = Path(__file__).resolve().parent / "worker_index.py"
UV = ROOT / ".venv" / "bin" / "uv"


class WorkerEnvError(RuntimeError):
    """The worker's environment cannot be found or built; the message says what to do."""


@dataclass
class WorkerVerdict:
    """What the worker's indexing said about an app."""

    worker: str
    loaded: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.refused and bool(self.loaded)


def find_interpreter() -> str | None:
    """A Python 3.13: `$WORKER_PYTHON_EXE`, a pyenv-installed 3.13, or `python3.13` on PATH."""
    candidates = [os.environ.get("WORKER_PYTHON_EXE", "")]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    pattern = f"{WORKER_PYTHON}.*/bin/python{WORKER_PYTHON}"
    candidates += sorted((str(p) for p in Path(pyenv_root, "versions").glob(pattern)), reverse=True)
    candidates.append(shutil.which(f"python{WORKER_PYTHON}") or "")
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, check=False)
        if probe.returncode == 0 and probe.stdout.strip() == WORKER_PYTHON:
            return candidate
    return None


def venv_python() -> Path:
    return VENV / "bin" / "python"


def _requirements_digest() -> str:
    digest = hashlib.sha256()
    for path in (*REQUIREMENTS, ROOT / "requirements.txt"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def is_ready() -> bool:
    stamp = VENV / ".installed"
    return venv_python().exists() and stamp.exists() and stamp.read_text() == _requirements_digest()


def ensure(progress: bool = True) -> Path:
    """Build the environment if it is missing or its requirements changed; returns its interpreter."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(ROOT / f".venv-{WORKER_PYTHON}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the test suite and `make` may build it at the same time
        if is_ready():
            return venv_python()
        interpreter = find_interpreter()
        if interpreter is None:
            raise WorkerEnvError(
                f"no Python {WORKER_PYTHON} found: the Functions worker for {WORKER_PYTHON} "
                f"(azure-functions-runtime) needs it. Install it (e.g. `pyenv install {WORKER_PYTHON}`) "
                f"or point WORKER_PYTHON_EXE at one.")
        if progress:
            print(f"building the Python {WORKER_PYTHON} worker environment in {VENV.name}/ …", file=sys.stderr)
        shutil.rmtree(VENV, ignore_errors=True)
        _run([interpreter, "-m", "venv", str(VENV)])
        requirements = [arg for path in REQUIREMENTS for arg in ("-r", str(path))]
        if UV.exists():  # the installer the Makefile pins: a fraction of pip's time on a fresh machine
            _run([str(UV), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(venv_python()),
                  *requirements])  # compiled as pip compiles (see the Makefile)
        else:
            _run([str(venv_python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  *requirements])
        (VENV / ".installed").write_text(_requirements_digest())
        return venv_python()


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise WorkerEnvError(f"`{' '.join(command[:4])} …` failed:\n{tail}")


def check(app_dir: Path = ROOT, script_file: str = "function_app.py", python: Path | None = None) -> WorkerVerdict:
    """Index `app_dir/script_file` with the real worker, in a process of the worker's environment."""
    interpreter = python or venv_python()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run([str(interpreter), str(INDEX_SCRIPT), str(app_dir), script_file],
                          capture_output=True, text=True, cwd=app_dir, env=env, check=False, timeout=120)
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError) as error:
        raise WorkerEnvError(f"the worker's indexing did not answer: {done.stderr.strip()[-2000:]}") from error
    return WorkerVerdict(worker=answer["worker"], loaded=answer["loaded"], refused=answer["refused"])


def describe(verdict: WorkerVerdict) -> str:
    if verdict.ok:
        return f"{verdict.worker} indexes all {len(verdict.loaded)} functions"
    lines = [f"{verdict.worker} refuses {len(verdict.refused)} function(s); Azure would not run them:"]
    lines += [f"  {name}: {message}" for name, message in verdict.refused.items()]
    return "\n".join(lines)


def preflight(app_module: str = "function_app") -> tuple[bool, str]:
    """The check `python -m devhost` runs before serving: (may serve, one line or the worker's refusal).

    It uses the environment only when it is built (`make install` builds it), so a start never
    waits for an install; where it cannot check, it says so.
    """
    script = ROOT / f"{app_module.replace('.', '/')}.py"
    if not script.exists():
        return True, f"Functions worker check skipped: {app_module} is not a script of this project"
    if not is_ready():
        reason = "no Python 3.13 on this machine" if find_interpreter() is None else "run `make worker-env` once"
        return True, f"Functions worker check skipped: its Python {WORKER_PYTHON} environment is not built ({reason})"
    try:
        verdict = check(script.parent, script.name)
    except (WorkerEnvError, subprocess.TimeoutExpired) as error:
        return True, f"Functions worker check skipped: {error}"
    return verdict.ok, describe(verdict)


def main(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else "check"
    try:
        if command == "ensure":
            print(ensure())
        elif command == "python":
            print(venv_python() if is_ready() else ensure())
        elif command == "check":
            verdict = check(python=ensure())
            print(describe(verdict))
            return 0 if verdict.ok else 1
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except WorkerEnvError as error:
        print(f"worker environment: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
