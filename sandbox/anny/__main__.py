"""Standalone: `python -m sandbox.anny --port P [--host 127.0.0.1] [--seed FILE] [--token T] [--org O]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sandbox.serve import serve_forever

from .config import AnnyConfig
from .emulator import AnnyEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.anny", description="anny Admin API emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=Path, help="JSON seed document (see docs/emulators.md)")
    parser.add_argument("--token", default=AnnyConfig.token, help="the accepted bearer token")
    parser.add_argument("--org", default=AnnyConfig.organization_id, help="the organization id (?o=)")
    args = parser.parse_args(argv)
    emulator = AnnyEmulator(token=args.token, organization_id=args.org)
    if args.seed is not None:
        emulator.seed(json.loads(args.seed.read_text()))
    print(f"anny emulator on http://{args.host}:{args.port} (token {args.token!r}, o={args.org!r})", flush=True)
    serve_forever(emulator.app(), args.host, args.port)


if __name__ == "__main__":
    main()
