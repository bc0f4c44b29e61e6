"""`gating reference [--write PATH] [--check PATH]`: the format reference, generated from the validators."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from gating.commands.reference_doc import CommandDoc, EnvSetting, render


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


def commands() -> list[CommandDoc]:
    """Every command and subcommand with its options, from the parser itself (so it cannot drift)."""
    from gating.commands.cli import build_parser

    out: list[CommandDoc] = []

    def walk(parser: argparse.ArgumentParser, name: str, summary: str) -> None:
        options, subs = [], None
        for a in parser._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            if isinstance(a, argparse._SubParsersAction):
                subs = a
                continue
            shown = a.metavar or ("{" + ",".join(map(str, a.choices)) + "}" if a.choices is not None
                                  else a.dest.upper() if a.nargs != 0 else None)
            if isinstance(shown, tuple):
                shown = " ".join(shown)
            if a.option_strings:
                flag = ", ".join(a.option_strings)
                if a.nargs == 0:
                    text = flag
                elif a.nargs in ("*", "?"):
                    text = f"{flag} [{shown} ...]" if a.nargs == "*" else f"{flag} [{shown}]"
                else:
                    text = f"{flag} {shown}"
            else:
                text = str(shown)
            help_text = a.help % {"default": a.default, "prog": parser.prog} if a.help else ""
            options.append((text, help_text))
        if name:
            out.append(CommandDoc(name, summary, tuple(options)))
        if subs is not None:
            helps = {c.dest: c.help or "" for c in subs._choices_actions}
            for sub_name, sub_parser in subs.choices.items():
                walk(sub_parser, f"{name} {sub_name}".strip(), helps.get(sub_name, ""))

    walk(build_parser(), "", "")
    return out


def run(args: argparse.Namespace) -> int:
    text = render(app_settings(), commands())
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
