"""host.json and .funcignore as production expects: what the host logs, and what the package holds."""

from __future__ import annotations

import fnmatch
import json
import subprocess

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
