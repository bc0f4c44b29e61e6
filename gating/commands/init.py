"""`gating init` and `gating import promptfoo CONFIG`: adopt gating in an existing repository.

Both look before they write, check what they would write with the project's own parsers, and never
replace a file without `--force`; a second run says what exists and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jinja2
from ruamel.yaml.error import YAMLError

from gating import limits
from gating.adopt.layout import Plan, dataset_text, plan_init, validate
from gating.adopt.pins import Pin
from gating.adopt.promptfoo import DATASET, convert
from gating.adopt.redteam import REDTEAM_DATASET, add_dataset, red_team_cases, summary
from gating.adopt.scan import MAX_FILE_BYTES, MAX_FILES, Scan, candidates, scan
from gating.adopt.workflow import WORKFLOW_PATH, template_path, workflow_text
from gating.commands.cli import UsageError
from gating.commands.common import repo
from gating.git.repository import Git
from gating.system.manifest import MANIFEST_PATH, ManifestError, parse_manifest


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write gating.yml, a starter dataset and the workflow for this repository")
    p.add_argument("--force", action="store_true", help="replace files that exist (default: leave them alone)")
    p.add_argument("--name", help="the system's name in gating.yml (default: the repository's directory name)")
    p.add_argument("--red-team", action="store_true",
                   help=f"also add adversarial cases (prompt injection, PII leakage, jailbreak, off-topic) as "
                        f"{REDTEAM_DATASET}, to a new or the existing gating.yml")
    p.set_defaults(func=run_init)
    imp = sub.add_parser("import", help="convert another tool's eval config to gating's")
    isub = imp.add_subparsers(dest="tool", metavar="TOOL", required=True)
    pf = isub.add_parser("promptfoo", help="a promptfooconfig.yaml: prompts, providers, tests, assertions")
    pf.add_argument("config", help="the promptfoo config (e.g. promptfooconfig.yaml)")
    pf.add_argument("--force", action="store_true", help="replace files that exist (default: refuse)")
    pf.set_defaults(func=run_import)


def _listing(g: Git) -> list[str]:
    """Tracked and untracked files, without what .gitignore hides."""
    out = g.run("ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({p for p in out.split("\0") if p})


def _read(root: Path, path: str) -> bytes | None:
    """A regular file of the work tree, within the size limit (links and large files are not read)."""
    full = root / path
    try:
        if full.is_symlink() or not full.is_file() or full.stat().st_size > MAX_FILE_BYTES:
            return None
        return full.read_bytes()
    except OSError:
        return None


def _write(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _pins_table(pins: list[Pin]) -> list[str]:
    if not pins:
        return []
    lines = ["", "Unpinned model ids (an alias moves under you; gating.yml uses the pinned id, pin your code too):",
             "", "| found | provider | use |", "|---|---|---|"]
    for p in sorted(set(pins), key=lambda p: p.found):
        use = f"`{p.use}`" if p.use else ("no known pinned id: pick a dated snapshot from the provider's model "
                                          "list (gating diff refuses the alias)")
        lines.append(f"| `{p.found}` | {p.provider} | {use} |")
    return lines


def run_init(args: argparse.Namespace) -> int:
    g = repo(args)
    root = g.root
    listing = _listing(g)
    wanted = candidates(listing)
    files = {p: b for p in wanted[:MAX_FILES] if (b := _read(root, p)) is not None}
    found = scan(files)
    plan = plan_init(found, args.name or root.resolve().name, red_team=args.red_team)
    validate(plan.files, listing)
    branch = g.default_branch() or g.current_branch() or "main"
    workflow = workflow_text(template_path().read_text(encoding="utf-8"), branch.split("/")[-1])
    groups = [dict(plan.files), {WORKFLOW_PATH: workflow}]  # the manifest and its files go together
    extra: dict[str, str] = {}  # the red-team cases for a gating.yml that exists
    if args.red_team and (root / MANIFEST_PATH).exists() and not args.force:
        groups[0].pop(REDTEAM_DATASET, None)
        extra = _red_team_existing(root, listing, plan)
    written, kept = [], []
    for group in groups:
        exists = [p for p in group if (root / p).exists()]
        if exists and not args.force:
            kept += exists
            continue
        _write(root, group)
        written += list(group)
    if extra:
        _write(root, extra)
        written += list(extra)
        kept = [p for p in kept if p not in extra]
    if args.red_team and (root / REDTEAM_DATASET).exists() and REDTEAM_DATASET not in written:
        kept.append(REDTEAM_DATASET)
    _report_init(found, plan, written, kept, len(wanted) > MAX_FILES)
    return 0


def _red_team_existing(root: Path, listing: list[str], plan: Plan) -> dict[str, str]:
    """The red-team dataset for the gating.yml that exists, and that manifest listing it (its comments
    and layout kept); the dataset is written only when it does not exist yet."""
    from gating.adopt.scan import template_vars

    plan.notes = [n for n in plan.notes if not n.startswith("red-team")]
    text = (root / MANIFEST_PATH).read_text(encoding="utf-8")
    try:
        m = parse_manifest(text.encode("utf-8"), MANIFEST_PATH)
    except ManifestError as e:
        raise UsageError(f"--red-team adds a dataset to {MANIFEST_PATH}, which does not validate:\n{e}") from None
    prompts: dict[str, tuple[str, ...]] = {}
    for name, p in m.prompts.items():
        data = _read(root, p["file"])
        try:
            prompts[name] = template_vars(data.decode("utf-8"), p["file"]) if data is not None else ()
        except (UnicodeDecodeError, jinja2.TemplateSyntaxError):
            prompts[name] = ()
    rt = red_team_cases(prompts, judged=bool(m.evals.get("judge")))
    plan.notes += rt.notes
    if not rt.cases:
        return {}
    updated = add_dataset(text)
    files: dict[str, str] = {} if updated is None else {MANIFEST_PATH: updated}
    listed = "" if updated is None else f", added to evals.datasets in {MANIFEST_PATH}"
    if (root / REDTEAM_DATASET).exists():
        plan.notes.append(f"red-team: {REDTEAM_DATASET} exists, left unchanged{listed}")
        return files
    files[REDTEAM_DATASET] = dataset_text(rt.cases)
    validate({MANIFEST_PATH: updated or text, **files}, listing)
    plan.notes.append(summary(rt) + listed)
    return files


def _report_init(found: Scan, plan: Plan, written: list[str], kept: list[str], partial: bool) -> None:
    out = [f"Found {len(found.prompts)} prompt file{'s' * (len(found.prompts) != 1)}, "
           f"{len(found.models)} model id{'s' * (len(found.models) != 1)}, "
           f"{len(found.tools)} tool schema{'s' * (len(found.tools) != 1)}"
           + (f" (only the first {MAX_FILES:,} candidate files were read)" if partial else "") + "."]
    out += [f"  - prompt {p.path}" for p in found.prompts] + [f"  - tool {t}" for t in found.tools]
    out += [f"  - {n}" for n in plan.notes]
    out += [f"  - left out {path}: {why}" for path, why in found.skipped]
    for cfg in found.promptfoo:
        out.append(f"  - promptfoo config {cfg}: `gating import promptfoo {cfg}` converts its prompts, "
                   "providers and tests")
    if written:
        out += ["", "Wrote:"] + [f"  {p}" for p in written]
    if kept:
        out += ["", "Exists, left unchanged (`gating init --force` rewrites it):"] + [f"  {p}" for p in kept]
    if not written:
        out += ["", "Nothing changed."]
    out += _pins_table(plan.pins)
    keys = plan.key_envs or ["OPENAI_API_KEY"]
    out += ["", "Next:",
            "  1. Read gating.yml; in evals/starter.jsonl put real inputs in `vars` and assert what a good answer",
            "     says (README, \"Evals\").",
            f"  2. Run the evals here: {' '.join(k + '=...' for k in keys)} gating eval",
            "     (`gating snapshot` shows the system it found)",
            "  3. Commit gating.yml, evals/ and .github/workflows/gating.yml, and open a pull request.",
            f"  4. Add {', '.join(keys)} as repository secrets (the workflow passes OPENAI_API_KEY and",
            "     ANTHROPIC_API_KEY: add any other there), then make `gating / eval` a required check of the",
            "     default branch."]
    print("\n".join(out))


def run_import(args: argparse.Namespace) -> int:
    g = repo(args)
    root = g.root.resolve()
    cfg = Path(args.config)
    cfg = (cfg if cfg.is_absolute() else Path(getattr(args, "repo", ".")) / cfg).resolve()
    if not cfg.is_relative_to(root):
        raise UsageError(f"{args.config}: the promptfoo config must be inside the repository ({root})")
    rel = cfg.relative_to(root).as_posix()
    try:
        text = cfg.read_bytes().decode("utf-8")
        doc = limits.load_json(text, rel) if rel.endswith(".json") else limits.load_yaml(text, rel)
    except UnicodeDecodeError:
        raise UsageError(f"{rel}: not UTF-8 text") from None
    except (ValueError, YAMLError) as e:
        raise UsageError(f"{rel}: not valid {'JSON' if rel.endswith('.json') else 'YAML'}: "
                         f"{getattr(e, 'problem', None) or e}") from None
    listing = _listing(g)
    listed = set(listing)
    def read(p: str) -> bytes | None:
        return _read(root, p) if p in listed else None

    result = convert(doc, rel, read, listing, root.name)
    exists = [p for p in result.files if (root / p).exists()]
    if exists and not args.force:
        raise UsageError(f"{', '.join(exists)} exist{'s' * (len(exists) == 1)}; nothing was written "
                         "(--force replaces them with the converted files)")
    validate(result.files, listing, read)
    _write(root, result.files)
    cases = sum(1 for line in result.files[DATASET].splitlines() if line)
    out = [f"Converted {rel}: {cases} case{'s' * (cases != 1)}.", "", "Wrote:"] + [f"  {p}" for p in result.files]
    out += [f"  - {n}" for n in result.notes]
    total = sum(result.skipped.values())
    if total:
        out += ["", f"Not converted ({total}): gating has no equivalent yet; add them by hand or drop them knowingly:"]
        out += [f"  {n} x {what}" for what, n in sorted(result.skipped.items(), key=lambda kv: (-kv[1], kv[0]))]
    else:
        out += ["", "Everything was converted."]
    out += _pins_table(result.pins)
    out += ["", "Next: review gating.yml, run `gating eval`, and `gating init` writes the workflow."]
    print("\n".join(out))
    sys.stdout.flush()
    return 0


__all__ = ["register"]
