"""Standalone: `python -m sandbox.graph --port P [--host 127.0.0.1] [--seed FILE]`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sandbox.serve import serve_forever

from .emulator import GraphEmulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.graph", description="Microsoft Graph emulator")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--seed", type=Path, help="JSON file: {rooms, mailboxes, events}")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every Graph request")
    args = parser.parse_args(argv)
    emulator = GraphEmulator(latency_ms=args.latency_ms)
    if args.seed:
        emulator.seed(json.loads(args.seed.read_text(encoding="utf-8")))
    print(f"Graph emulator on http://{args.host}:{args.port}/v1.0 (control: /_control)", flush=True)
    serve_forever(emulator.app(), args.host, args.port)


if __name__ == "__main__":
    main()
