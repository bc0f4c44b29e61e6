"""`gating reference [--write PATH] [--check PATH]`: the format reference, generated from the validators."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from gating.commands.reference_doc import EnvSetting, render


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reference", help="print the reference of every file format and setting (docs/reference.md)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="PATH", help="write it to PATH instead of printing it")
    g.add_argument("--check", metavar="PATH", help="exit 1 when PATH differs from what would be generated")
    p.set_defaults(func=run)


def app_settings() -> list[EnvSetting]:
    """The App's variables, from its Settings dataclass (a default factory is called for its value)."""
    from gating.server.settings import Settings

    out = []
    for f in fields(Settings):
        default = f.default_factory() if callable(f.default_factory) else f.default
        out.append(EnvSetting(f.metadata["env"], f.metadata["doc"], default))
    return out


def run(args: argparse.Namespace) -> int:
    text = render(app_settings())
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"wrote {args.write}", file=sys.stderr)
        return 0
    if args.check:
        try:
            current = Path(args.check).read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"gating: {args.check} is stale; run `gating reference --write {args.check}`", file=sys.stderr)
            return 1
        return 0
    sys.stdout.write(text)
    return 0
