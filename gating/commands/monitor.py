"""`gating monitor status` (each monitored deployment's rules against their thresholds, from the App)
and `gating monitor rules --prometheus` (the same rules for Prometheus and Alertmanager)."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from gating.commands.cli import UsageError
from gating.commands.common import STDOUT, app_get, owner_name, reader, repo
from gating.system.manifest import MANIFEST_PATH, parse_manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="production monitoring: rule status, Prometheus rules")
    msub = p.add_subparsers(dest="monitor_command", metavar="SUBCOMMAND", required=True)

    s = msub.add_parser("status", help="each monitored deployment's rules against their thresholds (from the App)")
    s.add_argument("--app", required=True, metavar="URL", help="the App's base URL")
    s.add_argument("--repository", required=True, type=owner_name, metavar="OWNER/NAME")
    s.add_argument("--token-env", default="GATING_MONITOR_TOKEN", metavar="VAR",
                   help="environment variable holding the App's GATING_MONITOR_TOKEN (default: that name)")
    s.add_argument("--json", action="store_true", help="print the App's answer as JSON")
    s.set_defaults(func=status)

    r = msub.add_parser("rules", help="write the monitor: rules for another evaluator")
    r.add_argument("--prometheus", action="store_true", required=True,
                   help="as Prometheus recording and alerting rules (the only form so far)")
    r.add_argument("--repository", required=True, type=owner_name, metavar="OWNER/NAME",
                   help="the `repository` label of every alert (the App routes on it)")
    r.add_argument("--service", metavar="NAME", help="service.name of the telemetry (default: monitor.service, "
                   "else the manifest's name)")
    r.add_argument("-o", "--output", default=STDOUT, metavar="FILE", help="rule file to write (default: stdout)")
    r.add_argument("--alertmanager", metavar="FILE", help="also write the Alertmanager route and receiver for "
                   "the App's POST /alerts")
    r.add_argument("--app", default="https://gating.example.com", metavar="URL",
                   help="the App's base URL, for --alertmanager")
    r.add_argument("--config", default=MANIFEST_PATH, help="manifest path (default: gating.yml)")
    r.add_argument("--system", action="append", metavar="SHA",
                   help="a commit whose eval projection the `x projected` thresholds use (repeatable; default: "
                   "every commit with a deployed or known_good entry in the audit log)")
    r.add_argument("--key", action="append", metavar="PUB.pem", help="trust audit entries signed by this public "
                   "key (default: the one committed in the repository)")
    r.add_argument("--remote", default="origin", help="remote to fetch the audit notes ref from (default origin)")
    r.add_argument("--no-fetch", action="store_true", help="use the local audit notes ref as it is")
    r.set_defaults(func=rules)


def _yaml(data: Any, header: str = "") -> str:
    from ruamel.yaml import YAML

    y = YAML(typ="safe", pure=True)
    y.default_flow_style = False
    y.width = 4096
    out = io.StringIO()
    y.dump(data, out)
    return header + out.getvalue()


def rules(args: argparse.Namespace) -> int:
    from gating.evals.metrics import price_table
    from gating.monitor.prometheus import alertmanager_config, on_alert_rule, prometheus_rules
    from gating.monitor.rules import parse_monitor
    from gating.rollback.plan import environments_of

    g = repo(args)
    data = reader(g, None).read_many([args.config])[args.config]
    if data is None:
        raise UsageError(f"{args.config}: no such file in {g.root}")
    m = parse_manifest(data, args.config)
    config = parse_monitor(m.monitor, m.name)
    if not config.rules:
        raise UsageError(f"{args.config} has no monitor.rules to write")
    service = args.service or config.service
    systems = known_systems(g, args, environments_of(m.rollback)) if any(r.relative for r in config.rules) else []
    prices = price_table(reader(g, None), m.evals or {}) if any(r.metric == "cost_per_day" for r in config.rules) else None
    prom, skipped = prometheus_rules(config, args.repository, service, systems, prices)
    header = (f"# Prometheus rules from monitor: in {args.config} ({m.name}), by `gating monitor rules --prometheus`.\n"
              f"# Metric names assumed: see gating.monitor.prometheus (OpenTelemetry Collector spanmetrics, GenAI).\n"
              "# For the App to roll back on `action: rollback` alerts, gating.yml needs under rollback.on_alert:\n"
              f"#   - {json.dumps(on_alert_rule())}\n")
    header += "".join(f"# projections of {', '.join(s.ids)}: {s.projection.source or 'none recorded'}\n"
                      for s in systems)
    header += "".join(f"# not written: {s.rule}: {s.why}\n" for s in skipped)
    text = _yaml(prom, header)
    if args.output == STDOUT:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    if args.alertmanager:
        Path(args.alertmanager).write_text(_yaml(alertmanager_config(args.app),
                                                 "# Merge into alertmanager.yml: the monitor's alerts go to the "
                                                 "App's POST /alerts.\n"))
    written = sum(1 for r in prom["groups"][0]["rules"] if "alert" in r)
    print(f"gating: {written} alerting rule{'s' if written != 1 else ''} written"
          + (f"; {len(skipped)} evaluated by the App only" if skipped else ""), file=sys.stderr)
    return 0


def known_systems(g: Any, args: argparse.Namespace, environments: tuple[str, ...]) -> list[Any]:
    """The systems whose projection the relative thresholds use, from the signed audit log: each
    --system, else every commit deployed (or known-good) in a rollback environment; the snapshot
    digest of its merged entry is the system's other id."""
    from gating.audit import log as audit_log
    from gating.audit.entry import is_deployment
    from gating.commands.audit import fetch, load_keys
    from gating.git import notes as git_notes
    from gating.monitor.prometheus import System
    from gating.monitor.rules import merged_entry, projection_of

    trusted = load_keys(g, args.key)
    fetch(g, args)
    entries = audit_log.read_log(git_notes.LocalNotes(g), trusted)
    if args.system:
        commits = []
        for rev in args.system:
            sha = g.resolve(rev)
            if sha is None:
                raise UsageError(f"unknown revision {rev!r} (--system)")
            commits.append(sha)
    else:
        commits = list(dict.fromkeys(e.commit for e in entries if e.event != "deploy_failed" and is_deployment(e, environments)))
    out = []
    for sha in commits:
        merged = merged_entry(entries, sha)
        if merged is None and args.system:
            raise UsageError(f"--system {sha[:12]}: no signed merged entry in the audit log, so no eval projection")
        digest = merged.predicate.get("snapshot_digest") if merged else None
        out.append(System((sha, digest) if digest else (sha,), projection_of(merged)))
    return out


def status(args: argparse.Namespace) -> int:

    token = os.environ.get(args.token_env, "")
    if not token:
        raise UsageError(f"${args.token_env} is not set: the App serves /monitor/status only with its token")
    status, body = app_get(args.app, "/monitor/status", {"repo": args.repository}, token, timeout=30)
    if status != 200:
        print(f"gating: the App answered {status}: {body.get('error', body)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2, sort_keys=True))
        return 0
    for d in body.get("deployments", []):
        known = d.get("known_good")
        print(f"{body['repository']}: {d['environment']} {d['commit'][:12]} {d['state']}"
              f" (known-good: {known[:12] if known else 'none yet'})" + (f": {d['note']}" if d.get("note") else ""))
        print(f"  {'rule':<22} {'value':>12} {'threshold':>14} {'samples':>9} {'window':>7}  state")
        for r in d.get("rules", []):
            value = "n/a" if r["value"] is None else f"{r['value']:.4g}"
            threshold = "anomaly" if r["threshold"] is None else f"{r['op']} {r['threshold']:.4g}"
            print(f"  {r['rule']:<22} {value:>12} {threshold:>14} {r['samples']:>9,} {r['window']['minutes']:>6}m  "
                  f"{'FIRING' if r['firing'] else 'ok'}")
    return 0
