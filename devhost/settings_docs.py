"""Render the settings documentation from `sync.settings` (the single source of truth).

`make docs` (`python -m devhost.settings_docs`) rewrites docs/settings.md and
local.settings.example.json; a test fails when either is out of date.
"""

from __future__ import annotations

import json
from pathlib import Path

from sync.settings import STORAGE_SETTINGS, declared_settings

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_DOC = ROOT / "docs" / "settings.md"
EXAMPLE = ROOT / "local.settings.example.json"
INTRO = """# Settings

Every app setting the sync reads, with its meaning and default. In Azure the deployment writes
all of them; the ones an admin chooses are deployment parameters (see
[admin-guide.md](admin-guide.md), step 1), so set them there, not in the portal. Locally they go
in `local.settings.json` (copy `local.settings.example.json`). Secrets are Key Vault references
in Azure and are never logged.

This page is generated from `sync/settings.py`, the single source of truth: after changing a
setting there, run `make docs` (a test fails while this page or `local.settings.example.json` is
out of date).
"""
PLACEHOLDERS = {
    "ANNY_API_TOKEN": "<anny API token>",
    "ANNY_ORGANIZATION_ID": "<anny organisation id>",
    "ANNY_WEBHOOK_SECRET": "<random secret, also set as custom header on the anny webhook>",
    "PUBLIC_BASE_URL": "https://<your-function-app>.azurewebsites.net",
}


def render_table() -> str:
    rows = ["| setting | meaning | default |", "| --- | --- | --- |"]
    for name, doc in STORAGE_SETTINGS.items():
        rows.append(f"| `{name}` | {doc} | |")
    for spec in declared_settings():
        default = "**required**" if spec.required else (f"`{spec.default}`" if spec.default else "(empty)")
        secret = " Secret." if spec.secret else ""
        rows.append(f"| `{spec.env}` | {spec.doc}{secret} | {default} |")
    return "\n".join(rows)


def render_example() -> str:
    values: dict[str, str] = {"FUNCTIONS_WORKER_RUNTIME": "python",
                              "AzureWebJobsStorage": "UseDevelopmentStorage=true"}
    meanings: dict[str, str] = dict(STORAGE_SETTINGS)
    for spec in declared_settings():
        values[spec.env] = PLACEHOLDERS.get(spec.env, spec.default or "")
        default = "required" if spec.required else f"default {spec.default!r}"
        meanings[spec.env] = f"{spec.doc} ({default})"
    document = {
        "IsEncrypted": False,
        "Values": values,
        "_meanings": meanings,
        "_comment": "Copy to local.settings.json (never commit that). Either AzureWebJobsStorage or the "
                    "identity-based AzureWebJobsStorage__* settings.",
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def render_settings_doc() -> str:
    return f"{INTRO}\n{render_table()}\n"


def main() -> None:
    SETTINGS_DOC.write_text(render_settings_doc())
    EXAMPLE.write_text(render_example())


if __name__ == "__main__":
    main()
