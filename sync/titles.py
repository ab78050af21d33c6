"""Titles of mirror events, from the admin's template. Placeholders are a closed set."""

from __future__ import annotations

import string

TEMPLATE_FIELDS = frozenset({"service", "number", "resource", "status"})
MAX_TITLE = 255


def check_template(template: str) -> None:
    """Raise ValueError unless the template only uses the known placeholders."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"expected a title template with {{placeholders}}: {exc}") from None
    used = {name for _, name, spec, conv in parsed if name is not None}
    unknown = sorted(used - TEMPLATE_FIELDS)
    if unknown or any(spec or conv for _, name, spec, conv in parsed if name is not None):
        raise ValueError(f"expected only the placeholders {', '.join(sorted(TEMPLATE_FIELDS))} "
                         f"(unknown: {', '.join(unknown) or 'format specs'})")
    if not template.strip():
        raise ValueError("expected a non-empty title template")


def render_title(template: str, **values: str) -> str:
    """Fill the template; missing values render empty and the result is trimmed to Graph's limit."""
    filled = template.format(**{name: values.get(name) or "" for name in TEMPLATE_FIELDS})
    return " ".join(filled.split())[:MAX_TITLE] or "anny"
