"""`gating view`: the App's pages (timeline, entries, eval reports, compare) served from this clone on
loopback, with no App and no sign-in, like `promptfoo view`. It reads the notes the clone has:
fetch them first (`git fetch origin 'refs/notes/gating/*:refs/notes/gating/*'`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

from gating.audit import keys as keymod
from gating.audit import log as audit_log
from gating.audit.entry import Entry
from gating.audit.witness import WITNESS_CHECK, CrossCheck, cross_check, parse_run
from gating.commands.audit_verify import PUBLISHED_KEY, _from_remote, published_key
from gating.commands.cli import UsageError
from gating.commands.common import repo
from gating.git.notes import AUDIT_REF, EVALS_REF, LocalNotes
from gating.git.repository import Git
from gating.git.revision import GitRevision
from gating.pages.index import Index
from gating.pages.site import Site
from gating.pages.source import Source

FETCH_HINT = "git fetch origin 'refs/notes/gating/*:refs/notes/gating/*'"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="serve the audit timeline and eval reports of this clone on loopback")
    p.add_argument("--port", type=int, default=8421, help="port on 127.0.0.1 (default 8421; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--key", action="append", metavar="PUB.pem",
                   help=f"trusted public key of the audit log (repeatable; default: {PUBLISHED_KEY} at HEAD)")
    p.add_argument("--remote", default="origin", help="remote whose URL names the repository for links (default origin)")
    p.add_argument("--no-witness", action="store_true",
                   help="do not read the App's `gating / audit` witnesses (read when GITHUB_TOKEN is set)")
    p.set_defaults(func=run, github_repo=None, api_url=None, app_id=None)


def witness_reader(g: Git, args: argparse.Namespace) -> tuple[Callable[[Sequence[Entry]], CrossCheck | None] | None, str]:
    """The App's witnesses read as `gating audit verify` reads them (a token is needed), or why not."""
    from gating.commands.audit_verify import WITNESS_DEPTH, app_pin, scan_commits, witness_source
    from gating.github.witness import runs_on

    src = witness_source(g, args)
    if src.repo is None:
        return None, src.why
    pin, repo = app_pin(g, args), src.repo

    def read(entries: Sequence[Entry]) -> CrossCheck | None:
        commits = scan_commits(g, [e.commit for e in entries], WITNESS_DEPTH)
        return cross_check([parse_run(r) for r in runs_on(repo, commits, WITNESS_CHECK)], entries, pin)
    return read, ""


def local_source(g: Git, key_paths: list[str] | None = None, remote: str = "origin",
                 witnesses: Callable[[Sequence[Entry]], CrossCheck | None] | None = None) -> Source:
    audit, evals = LocalNotes(g, AUDIT_REF), LocalNotes(g, EVALS_REF)
    if key_paths:
        keys = {}
        for path in key_paths:
            pub = keymod.load_public(keymod.read_file(path), path)
            keys[keymod.keyid(pub)] = pub
        where = ", ".join(key_paths)
    else:
        found = published_key(g)
        keys, where = found if found else ({}, "")
    name, api = _from_remote(g, remote)
    web = None
    if name and api:
        web = f"https://github.com/{name}" if api.startswith("https://api.github.com") else \
            f"{api.removesuffix('/api/v3')}/{name}"
    return Source(
        name=name or g.root.resolve().name, audit=audit, evals=evals,
        verify=lambda k: audit_log.verify(audit, k, keep=True),
        revision=lambda c: GitRevision(g, c),
        note=lambda c: g.notes_show(EVALS_REF, c),
        keys=keys, key_source=where, witnesses=witnesses, web_url=web,
        resolve=lambda rev: g.resolve(rev))


def run(args: argparse.Namespace) -> int:
    from gating.pages.wsgi import serve

    g = repo(args)
    witnesses, why = witness_reader(g, args)
    if witnesses is None:
        print(f"gating view: the App's witnesses are not read ({why})", file=sys.stderr)
    try:
        source = local_source(g, args.key, args.remote, witnesses)
    except keymod.KeyError_ as e:
        raise UsageError(str(e)) from None
    if source.audit.tip() is None and source.evals.tip() is None:
        print(f"gating view: this clone has no gating notes yet; fetch them with:\n  {FETCH_HINT}", file=sys.stderr)
    site = Site(source, Index())
    try:
        server, thread = serve(site, args.host, args.port)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"gating view: listening on {args.host}: anyone who can reach it reads this clone's audit log and "
              "eval results (there is no sign-in)", file=sys.stderr)
    print(f"gating view: {source.name} at http://{host}:{port}/ (Ctrl-C stops it)", flush=True)
    try:
        while thread.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0
