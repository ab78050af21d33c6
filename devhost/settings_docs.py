"""Render the settings documentation from `sync.settings` (the single source of truth).

`python -m devhost.settings_docs` rewrites the README table and local.settings.example.json;
a test fails when either is out of date.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sync.settings import STORAGE_SETTINGS, declared_settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "local.settings.example.json"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
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


def readme_with_table(readme: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{render_table()}\n{END}", readme)


def main() -> None:
    README.write_text(readme_with_table(README.read_text()))
    EXAMPLE.write_text(render_example())


if __name__ == "__main__":
    main()
