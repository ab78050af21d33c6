"""host.json and .funcignore as production expects: what the host logs, and what the package holds."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

from bicep_template import ROOT


def _host_json() -> dict:
    return json.loads((ROOT / "host.json").read_text())


def test_successful_invocations_reach_the_requests_table_with_bounded_sampling():
    logging = _host_json()["logging"]
    assert logging["logLevel"]["Host.Results"] == "Information"  # "Error" would drop successful requests
    sampling = logging["applicationInsights"]["samplingSettings"]
    assert sampling["isEnabled"] is True and 0 < sampling["maxTelemetryItemsPerSecond"] <= 20
    # requests are sampled like the rest, so their cost stays bounded; exceptions are always kept
    assert "Request" not in sampling.get("excludedTypes", "").split(";")
    assert "Exception" in sampling["excludedTypes"].split(";")


def _packaged_files() -> set[str]:
    """The files a deployment zips: what git tracks, less what .funcignore names (gitignore syntax)."""
    patterns = [line.strip() for line in (ROOT / ".funcignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout  # noqa: S607
    return {path for path in tracked.split()
            if not any(fnmatch.fnmatch(part, pattern) for part in path.split("/") for pattern in patterns)}


def test_the_package_holds_the_app_and_nothing_for_development():
    packaged = _packaged_files()
    assert {"function_app.py", "host.json", "requirements.txt", "sync/__init__.py"} <= packaged
    for left_out in ("local.settings.example.json", "requirements-dev.txt", "requirements-worker.txt",
                     "requirements-run.txt", "requirements-tools.txt",
                     "Makefile", "README.md", "docs/admin-guide.md", "infra/main.bicep"):
        assert left_out not in packaged, left_out
    assert not {path for path in packaged if path.split("/")[0] in {"tests", "sandbox", "devhost", "bench", ".ci"}}


def _pinned(path: Path) -> dict[str, str]:
    """Distribution → the line pinning it (for this Python), from a requirements file alone."""
    pins = {}
    for line in path.read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if not requirement or requirement.startswith("-"):
            continue
        name, _, rest = requirement.partition("==")
        marker = rest.partition(";")[2].strip()
        if not marker or eval(marker, {"python_version": f"{sys.version_info[0]}.{sys.version_info[1]}"}):  # noqa: S307
            pins[name.strip().lower().replace("_", "-")] = requirement
    return pins


def _third_party_imports() -> set[str]:
    """Top-level modules the deployed code imports that are neither ours nor the standard library's."""
    found = set()
    for path in [ROOT / "function_app.py", *sorted((ROOT / "sync").rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    ours = ("sync", "__future__", "devhost")  # devhost: the CLI's sandbox helpers, for local use only (not packaged)
    return {name for name in found if name not in sys.stdlib_module_names and name not in ours}


def test_every_package_the_deployed_code_imports_is_pinned_in_requirements_txt():
    """Azure's remote build installs requirements.txt only: a package that came along with another
    would arrive in whatever version is newest that day, or not at all once that one drops it."""
    pinned = _pinned(ROOT / "requirements.txt")
    distributions = importlib.metadata.packages_distributions()
    unpinned = {module: distributions.get(module) for module in _third_party_imports()
                if not any(d.lower().replace("_", "-") in pinned for d in distributions.get(module, []))}
    assert unpinned == {}


def test_the_worker_azure_runs_on_3_13_is_the_one_the_tests_index_with():
    pins = (ROOT / "requirements.txt").read_text()
    assert 'azure-functions-runtime==1.3.0; python_version >= "3.13"' in pins
    assert "azure-functions-runtime" not in (ROOT / "requirements-worker.txt").read_text().split("#")[-1]
