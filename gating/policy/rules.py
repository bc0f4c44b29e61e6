"""Parse the `approvals` list of gating.yml once into frozen rules; errors list the allowed values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gating.errors import InputError, count
from gating.system.schema import CATEGORIES, PERMISSIONS

MAX_DEPTH = 4
RULE_KEYS = ("name", "if", "requires", "options", "and", "or")
CONDITION_KEYS = ("changed_files", "ignore", "manifest_paths", "categories", "labels", "target_branches", "authors")
REQUIRES_KEYS = ("count", "users", "teams", "permission")
OPTION_DEFAULTS = {"allow_author": False, "invalidate_on_push": False, "ignore_bots": True, "require_evidence": True,
                   "invalidate_override_on_push": True}


class PolicyError(InputError):
    """The approval rules cannot be used; `problems` lists every reason, with the allowed values."""

    def __init__(self, problems: Sequence[str]):
        super().__init__("; ".join(problems), problems)
        self.message = f"{count(len(self.problems), 'problem')} in the approval rules"


@dataclass(frozen=True)
class Condition:
    changed_files: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    manifest_paths: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    target_branches: tuple[str, ...] = ()
    author_users: tuple[str, ...] = ()
    author_teams: tuple[str, ...] = ()


@dataclass(frozen=True)
class Requires:
    count: int = 1
    users: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    permission: str | None = None


@dataclass(frozen=True)
class Options:
    allow_author: bool = False
    invalidate_on_push: bool = False
    ignore_bots: bool = True
    require_evidence: bool = True
    invalidate_override_on_push: bool = True  # false: an override given before a push still counts


@dataclass(frozen=True)
class Rule:
    name: str
    where: str  # "approvals[1]", for messages
    condition: Condition | None = None
    requires: Requires = Requires()
    options: Options = Options()
    op: str | None = None  # "and" | "or" for a composite rule
    children: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()


def _strs(value: Any, where: str, problems: list[str], strip_at: bool = False) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        problems.append(f"{where}: expected a list of non-empty strings")
        return ()
    return tuple(v.lstrip("@") if strip_at else v for v in value)


def _unknown_keys(d: Mapping[str, Any], allowed: Sequence[str], where: str, problems: list[str]) -> None:
    for k in d:
        if k not in allowed:
            problems.append(f"{where}: unknown key {k!r} (allowed: {', '.join(allowed)})")


def _mapping(value: Any, where: str, problems: list[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        problems.append(f"{where}: expected a mapping")
        return {}
    return value


def _parse_condition(raw: Any, where: str, problems: list[str]) -> Condition:
    d = _mapping(raw, where, problems)
    _unknown_keys(d, CONDITION_KEYS, where, problems)
    kw: dict[str, tuple[str, ...]] = {}
    for key in ("changed_files", "ignore", "manifest_paths", "labels", "target_branches"):
        if key in d:
            kw[key] = _strs(d[key], f"{where}.{key}", problems)
    if "categories" in d:
        cats = _strs(d["categories"], f"{where}.categories", problems)
        for c in cats:
            if c not in CATEGORIES:
                problems.append(f"{where}.categories: {c!r} is not one of: {', '.join(CATEGORIES)}")
        kw["categories"] = cats
    if "authors" in d:
        a = _mapping(d["authors"], f"{where}.authors", problems)
        _unknown_keys(a, ("users", "teams"), f"{where}.authors", problems)
        kw["author_users"] = _strs(a.get("users", []), f"{where}.authors.users", problems, True)
        kw["author_teams"] = _teams(a.get("teams", []), f"{where}.authors.teams", problems)
    return Condition(**kw)


def _teams(raw: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    teams = _strs(raw, where, problems, True)
    for t in teams:
        if t.count("/") != 1:
            problems.append(f"{where}: team {t!r} must be written org/team-slug")
    return teams


def _parse_requires(raw: Any, where: str, problems: list[str]) -> Requires:
    d = _mapping(raw, where, problems)
    _unknown_keys(d, REQUIRES_KEYS, where, problems)
    count = d.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        problems.append(f"{where}.count: expected a whole number >= 0, got {count!r}")
        count = 1
    perm = d.get("permission")
    if perm is not None and perm not in PERMISSIONS:
        problems.append(f"{where}.permission: {perm!r} is not one of: {', '.join(PERMISSIONS)}")
        perm = None
    req = Requires(
        count=count,
        users=_strs(d.get("users", []), f"{where}.users", problems, True),
        teams=_teams(d.get("teams", []), f"{where}.teams", problems),
        permission=perm,
    )
    if req.users and not req.teams and req.permission is None and count > len(set(req.users)):
        problems.append(f"{where}.count: {count} approvals can never come from {len(set(req.users))} listed "
                        f"user{'s' if len(set(req.users)) != 1 else ''}; list more users, add teams or a "
                        "permission, or lower the count")
    return req


def _parse_options(raw: Any, where: str, problems: list[str], inherited: Options) -> Options:
    d = _mapping(raw, where, problems)
    _unknown_keys(d, tuple(OPTION_DEFAULTS), where, problems)
    kw = {}
    for k, v in d.items():
        if k in OPTION_DEFAULTS:
            if not isinstance(v, bool):
                problems.append(f"{where}.{k}: expected true or false, got {v!r}")
            else:
                kw[k] = v
    return replace(inherited, **kw)


def _parse_rule(raw: Any, where: str, depth: int, inherited: Options, problems: list[str]) -> Rule | None:
    if not isinstance(raw, dict):
        _mapping(raw, where, problems)
        return None
    d = raw
    name = d.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{where}: every rule needs a name")
        name = where
    else:
        where = f"{where} ({name})"
    _unknown_keys(d, RULE_KEYS, where, problems)
    opts = _parse_options(d["options"], f"{where}.options", problems, inherited) if "options" in d else inherited
    cond = _parse_condition(d["if"], f"{where}.if", problems) if "if" in d else None
    ops = [k for k in ("and", "or") if k in d]
    if len(ops) > 1:
        problems.append(f"{where}: use either 'and' or 'or', not both (nest a rule to combine them)")
    if not ops:
        req = _parse_requires(d["requires"], f"{where}.requires", problems) if "requires" in d else Requires()
        return Rule(name, where, cond, req, opts)
    op = ops[0]
    if "requires" in d:
        problems.append(f"{where}: a rule with '{op}' takes its requirements from its children; move 'requires' into them")
    if depth >= MAX_DEPTH:
        problems.append(f"{where}: rules nest at most {MAX_DEPTH} levels deep")
        return None
    items = d[op]
    if not isinstance(items, list) or not items:
        problems.append(f"{where}.{op}: expected a non-empty list of rules")
        return None
    kids = [_parse_rule(r, f"{where}.{op}[{i}]", depth + 1, opts, problems) for i, r in enumerate(items)]
    return Rule(name, where, cond, Requires(), opts, op, tuple(k for k in kids if k))


def parse_policy(rules: Sequence[Any] | None) -> Policy:
    """Parse the `approvals` list of gating.yml once; raises PolicyError listing every problem."""
    problems: list[str] = []
    if rules is None:
        return Policy()
    if not isinstance(rules, list):
        raise PolicyError(["approvals: expected a list of rules"])
    parsed = [_parse_rule(r, f"approvals[{i}]", 1, Options(), problems) for i, r in enumerate(rules)]
    names = [r.name for r in parsed if r]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"approvals: duplicate rule name {dup!r}")
    if problems:
        raise PolicyError(problems)
    return Policy(tuple(r for r in parsed if r))


# The rule for a pull request that changes how pull requests are judged or approved. It applies in
# addition to the base branch's rules, never instead of them: a rule that happens to match (a prompt
# review, say) must not be what lets a pull request loosen its own gates.
POLICY_CHANGE_PATHS = ("approvals", "evals", "rollback", "monitor", "deploy")  # manifest paths: each covers what is under it
POLICY_CHANGE_FILES = (".gating/**", ".github/workflows/**")  # the audit key; the workflows' gating settings
POLICY_CHANGE_RULE = Rule(
    "policy-change (built in)",
    "built in",
    None,
    Requires(count=1, permission="admin"),
    Options(invalidate_on_push=True),
)
