"""The Bicep template as data, for the infra tests (the `template` fixture is in conftest.py).

No Bicep compiler runs here, so `pycep-parser` turns `infra/main.bicep` into a dict and the
`Template` below answers the questions the tests ask of it: which resources, which
properties, what an expression refers to. pycep keeps identifiers and string literals alike
as plain strings and `'…${x}…'` interpolations verbatim; property access such as
`identity.properties.clientId` becomes nested operator dicts, which `dotted` flattens.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pycep import BicepParser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
MAIN_BICEP = INFRA / "main.bicep"

_INTERPOLATION = re.compile(r"\$\{([^}]*)\}")

# Evaluating with this gives the app the host name app.example.
APP_HOST = {"functionApp.properties.defaultHostName": "app.example"}


def parse_bicep(path: Path) -> dict[str, Any]:
    return BicepParser().parse(file_path=path)


class Template:
    def __init__(self, parsed: dict[str, Any]) -> None:
        self.parsed = parsed
        self.params: dict[str, Any] = parsed.get("parameters", {})
        self.variables: dict[str, Any] = parsed.get("variables", {})
        self.resources: dict[str, Any] = parsed.get("resources", {})
        self.outputs: dict[str, Any] = parsed.get("outputs", {})
        self.extensions: dict[str, Any] = parsed.get("extensions", {})

    # --- resources -------------------------------------------------------------------

    def resource(self, symbol: str) -> dict[str, Any]:
        """The resource's body; for `= if (…) {…}` and loops, the body inside."""
        config = self.resources[symbol]["config"]
        while "config" in config and ("condition" in config or "loop_type" in config):
            config = config["config"]
        return config

    def condition(self, symbol: str) -> Any:
        return self.resources[symbol]["config"].get("condition")

    def of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {s: self.resource(s) for s, r in self.resources.items()
                if r["type"] == resource_type and not r["existing"]}

    def only(self, resource_type: str) -> tuple[str, dict[str, Any]]:
        found = self.of_type(resource_type)
        assert len(found) == 1, f"expected one {resource_type}, found {sorted(found)}"
        return next(iter(found.items()))

    def app_settings(self) -> dict[str, Any]:
        sites_config = self.of_type("Microsoft.Web/sites/config")
        bodies = [body for body in sites_config.values() if body.get("name") == "appsettings"]
        assert len(bodies) == 1, "expected one Microsoft.Web/sites/config 'appsettings' resource"
        return bodies[0]["properties"]

    # --- parameters and variables ------------------------------------------------------

    def decorators(self, param: str) -> dict[str, Any]:
        return {d["type"]: d.get("argument") for d in self.params[param]["decorators"]}

    def secure_params(self) -> set[str]:
        return {name for name in self.params if "secure" in self.decorators(name)}

    def var(self, name: str) -> Any:
        return self.variables[name]["value"]

    # --- expressions -----------------------------------------------------------------

    @staticmethod
    def dotted(expr: Any) -> str | None:
        """`a.b.c` for a property access (or a bare identifier), else None."""
        if isinstance(expr, str):
            return expr
        if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "property_accessor":
            operands = expr["operator"]["operands"]
            left, right = Template.dotted(operands["operand_1"]), Template.dotted(operands["operand_2"])
            if left is not None and right is not None:
                return f"{left}.{right}"
        return None

    @staticmethod
    def function(expr: Any) -> tuple[str, dict[str, Any]] | None:
        if isinstance(expr, dict) and "function" in expr:
            return expr["function"]["type"], expr["function"].get("parameters") or {}
        return None

    def evaluate(self, expr: Any, env: Mapping[str, Any]) -> Any:
        """Evaluate the plain subset the template uses: names (looked up in `env`, then in the
        variables), property access, `${…}` interpolation, `cond ? a : b`, `!`, `empty()`,
        `concat()`, `string()` and literals. Anything else raises, so a test never passes on a guess."""
        if isinstance(expr, str):
            if expr in env:
                return env[expr]
            if expr in self.variables:
                return self.evaluate(self.var(expr), env)
            if expr in self.params:
                raise KeyError(f"no value for parameter {expr} in this evaluation")
            return _INTERPOLATION.sub(lambda m: str(self._reference(m.group(1).strip(), env)), expr)
        if isinstance(expr, list):
            return [self.evaluate(item, env) for item in expr]
        if expr is None or isinstance(expr, bool | int):
            return expr
        path = self.dotted(expr)
        if path is not None:
            if path in env:
                return env[path]
            raise KeyError(f"no value for {path} in this evaluation")
        if "operator" in expr:
            op, operands = expr["operator"]["type"], expr["operator"]["operands"]
            if op == "conditional":
                chosen = "true_value" if self.evaluate(operands["condition"], env) else "false_value"
                return self.evaluate(operands[chosen], env)
            if op == "not":
                return not self.evaluate(operands["bool_value"], env)
            raise NotImplementedError(op)
        fn = self.function(expr)
        if fn is not None:
            name, args = fn
            if name == "empty":
                return not self.evaluate(args["item_to_test"], env)
            if name == "string":
                value = self.evaluate(args["value_to_convert"], env)
                return str(value).lower() if isinstance(value, bool) else str(value)
            if name == "concat":
                ordered = sorted(args, key=lambda key: int(key.rsplit("_", 1)[1]))
                return [item for key in ordered for item in self.evaluate(args[key], env)]
            raise NotImplementedError(name)
        return {key: self.evaluate(value, env) for key, value in expr.items()}

    def _reference(self, name: str, env: Mapping[str, Any]) -> Any:
        """The value of a `${name}` or `${a.b.c}` inside a string; unknown ones raise."""
        if name in env:
            return env[name]
        if name in self.variables:
            return self.evaluate(self.var(name), env)
        raise KeyError(f"no value for {name} in this evaluation")

    def branches(self, expr: Any) -> Iterator[Any]:
        """Every value an expression can take, one `cond ? a : b` at a time."""
        if isinstance(expr, dict) and expr.get("operator", {}).get("type") == "conditional":
            operands = expr["operator"]["operands"]
            yield from self.branches(operands["true_value"])
            yield from self.branches(operands["false_value"])
        else:
            yield expr
