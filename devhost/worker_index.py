"""Index a function app as the Functions host's Python worker does, and say which functions it refuses.

Runs *inside* the worker's environment (Python 3.13 with `azure-functions-runtime`, the
worker the host starts for 3.13+; the 3.11/3.12 worker in the platform image applies the
same checks). It calls the worker's own code in the order the worker does at init:
`bindings.meta.load_binding_registry()`, `loader.index_function_app()`, then
`loader.process_indexed_function()`, which runs `Registry.add_indexed_function()` (the
annotation and binding checks that raise `FunctionLoadError`) and builds the metadata the
host receives.

The only stand-in is `protos`: the host's gRPC message classes, which the host's proxy
process hands to the worker and which no package on PyPI ships for this worker. The
worker reads three enum values from it and builds plain messages; `_Protos` gives the
values of the Functions language-worker protobuf (`BindingInfo.Direction`: in=0, out=1,
inout=2; `DataType`: undefined=0, string=1, binary=2, stream=3).

Usage: python devhost/worker_index.py [APP_DIR] [SCRIPT_FILE]
Prints one JSON object `{"worker", "loaded", "refused"}`; exits 0 only when every function loads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any


class _Message(SimpleNamespace):
    def __init__(self, **fields: Any) -> None:
        super().__init__(**fields)


class _BindingInfo(_Message):
    # protobuf enum values, exposed on the message class as generated protobuf code does
    out = 1
    inout = 2
    undefined = 0
    string = 1
    binary = 2
    stream = 3


setattr(_BindingInfo, "in", 0)  # a Python keyword, so not writable as a class attribute


class _Protos:
    BindingInfo = _BindingInfo
    RpcFunctionMetadata = _Message
    RpcRetryOptions = _Message


def index(app_dir: Path, script_file: str) -> dict[str, Any]:
    sys.path.insert(0, str(app_dir))
    from azure_functions_runtime import loader
    from azure_functions_runtime.bindings import meta
    from azure_functions_runtime.functions import Registry
    from azure_functions_runtime.version import VERSION

    meta.load_binding_registry()
    registry = Registry()
    loaded: list[str] = []
    refused: dict[str, str] = {}
    for function in loader.index_function_app(str(app_dir / script_file)):
        name = function.get_function_name()
        try:
            loader.process_indexed_function(_Protos, registry, [function], str(app_dir))
        except Exception as error:  # the worker's verdict, whatever its type
            refused[name] = f"{type(error).__name__}: {error}"
        else:
            loaded.append(name)
    return {"worker": f"azure-functions-runtime {VERSION}", "loaded": loaded, "refused": refused}


def main(argv: list[str]) -> int:
    app_dir = Path(argv[1]).resolve() if len(argv) > 1 else Path.cwd()
    script_file = argv[2] if len(argv) > 2 else "function_app.py"
    try:
        verdict = index(app_dir, script_file)
    except Exception as error:  # indexing itself failed: the host would run nothing
        verdict = {"worker": "azure-functions-runtime", "loaded": [],
                   "refused": {"(indexing)": f"{type(error).__name__}: {error}"}}
    print(json.dumps(verdict))
    return 0 if not verdict["refused"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
