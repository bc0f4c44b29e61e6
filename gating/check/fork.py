"""The privileged half of the fork pattern, and the refusal of a privileged run that names a fork's head.

A `workflow_run` run (started when the unprivileged collect run finished) checks out the base
branch and holds a write token and the provider keys. It believes only GitHub: the head SHA of the
finished run (the event) and the pull request (the API). The artifact is checked against both, its
files against the head commit's git objects (fetched as `refs/pull/N/head` from the base
repository), and the evaluation then runs through the normal `gating check` machinery on the base
checkout, posting `gating / eval` on the head SHA. What it cannot do safely it refuses, on the check:
a fork's change to where requests go (a model's `base_url`, `api_key_env`, the target) or to the
code a `command`/`http` target runs is never evaluated with the repository's secrets. Python checks and
transforms always come from the base (gating.evals.judging), so a fork's edits to them never run; what
would run a fork's Python (inline checks in cases it adds, or evals that only its head has) is refused.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gating.check.artifact import ArtifactRefused, Collected, read, system_files
from gating.check.context import CheckContext, ContextError, Settings
from gating.check.notes import auth_env
from gating.check.output import CheckResult
from gating.check.post import CheckGitHub, GitHubFailure, Poster
from gating.check.run import CheckRun, _remote, resolve_base, run_check, write_files
from gating.git.repository import Git
from gating.git.revision import GitRevision
from gating.system.manifest import Manifest, ManifestError
from gating.system.snapshot import build_snapshot

PULL_REF = "refs/gating/pull/{n}/head"  # where the head fetched from refs/pull/N/head is kept locally


@dataclass(frozen=True)
class RunFacts:
    """What the `workflow_run` event says about the finished run: GitHub wrote it, so it is trusted."""

    head_sha: str
    head_repository: str | None
    event: str | None
    conclusion: str | None
    url: str | None


def run_facts(event: Mapping[str, Any] | None) -> RunFacts:
    run = (event or {}).get("workflow_run")
    if not isinstance(run, Mapping) or not isinstance(run.get("head_sha"), str):
        raise ContextError("--from-artifact evaluates a collected pull request in a `workflow_run` run: the event "
                           "payload has no workflow_run with a head_sha")
    return RunFacts(run["head_sha"], (run.get("head_repository") or {}).get("full_name"), run.get("event"),
                    run.get("conclusion"), run.get("html_url"))


def refuse(ctx: CheckContext, settings: Settings, message: str, *, github: CheckGitHub | None,
           head_sha: str | None = None, base: str | None = None, clock: Callable[[], float] = time.time) -> CheckRun:
    """A failed `gating / eval` on the head saying why (when the token can post), plus the step outputs,
    summary and report, so a required check never waits for a run that will not come."""
    r = CheckResult("error", "failure", [message], head_sha or ctx.head_sha, base, settings.fail_on, error=message)
    poster = Poster.open(replace(ctx, fork=False), clock, github=github) if settings.post else None
    if poster:
        poster.finish(r)
    files = write_files(ctx, settings, r, poster, {"written": False, "reason": "the check did not run"})
    return CheckRun(r, poster.check_run_id if poster else None, {}, poster.refused if poster else None, files)


def verify_claims(c: Collected, facts: RunFacts, repository: str | None, pull: Mapping[str, Any]) -> None:
    """The artifact's head and pull request against the event and the API."""
    if c.head_sha != facts.head_sha:
        raise ArtifactRefused(f"it names head {c.head_sha[:12]}, but the run that produced it ran on "
                              f"{facts.head_sha[:12]}")
    if c.repository and repository and c.repository.lower() != repository.lower():
        raise ArtifactRefused(f"it was collected for {c.repository}, not {repository}")
    head, base = pull.get("head") or {}, pull.get("base") or {}
    if (base.get("repo") or {}).get("full_name", "").lower() != (repository or "").lower():
        raise ArtifactRefused(f"pull request #{c.pull_number} is not a pull request into {repository}")
    if head.get("sha") != facts.head_sha:
        raise ArtifactRefused(f"pull request #{c.pull_number}'s head is {str(head.get('sha'))[:12]}, not "
                              f"{facts.head_sha[:12]} (it names another pull request, or the pull request moved on: "
                              "the run of its new head reports there)")
    head_repo = (head.get("repo") or {}).get("full_name")
    if facts.head_repository and head_repo != facts.head_repository:
        raise ArtifactRefused(f"pull request #{c.pull_number} comes from {head_repo}, but the run that produced it "
                              f"ran on {facts.head_repository}")
    if pull.get("state") != "open":
        raise ArtifactRefused(f"pull request #{c.pull_number} is {pull.get('state')}")


def fetch_head(g: Git, remote: str | None, number: int, head: str, token: str | None) -> None:
    """The head commit's git objects, from the base repository's refs/pull/N/head (a fork's commits are
    reachable there); its tip must be the head the event names."""
    ref = PULL_REF.format(n=number)
    if remote is None or not g.fetch(remote, "--no-tags", f"+refs/pull/{number}/head:{ref}",
                                     env=auth_env(g, remote, token)):
        raise ArtifactRefused(f"refs/pull/{number}/head could not be fetched from the base repository, so the "
                              "artifact's files cannot be checked against the head commit")
    tip = g.resolve(ref)
    if tip != head:
        raise ArtifactRefused(f"refs/pull/{number}/head is {str(tip)[:12]}, not {head[:12]}")


def verify_files(g: Git, head: str, c: Collected, config: str) -> list[str]:
    """Every file of the artifact against the head commit, and the head's system files against the artifact."""
    if c.config != config:
        return [f"it was collected with config {c.config!r}, but this repository's workflow evaluates {config!r}"]
    expected = system_files(g, head, config)
    problems = []
    for path in sorted(set(c.files) | set(expected)):
        if path not in expected:
            problems.append(f"{path} is not a file of the head commit's LLM system")
        elif path not in c.files:
            problems.append(f"{path} (a file of the head's LLM system) is missing")
        elif c.files[path] != expected[path]:
            problems.append(f"{path} differs from the head commit's {path}")
    return problems


def _manifest(g: Git, rev: str, config: str) -> Manifest | None:
    try:
        return build_snapshot(GitRevision(g, rev), config).manifest
    except ManifestError:
        return None  # the normal check reports a manifest error on its own


def untrusted_changes(g: Git, base: str, head: str, config: str) -> list[str]:
    """What the head changes that the privileged run must not take from a fork: where requests go (and
    the keys they carry) and the code a `command`/`http` target runs."""
    b, h = _manifest(g, base, config), _manifest(g, head, config)
    if b is None or h is None:
        return []
    found = []
    for name, model in h.models.items():
        was = b.models.get(name) or {}
        for key in ("base_url", "api_key_env"):
            if model.get(key) is not None and model.get(key) != was.get(key):
                found.append(f"components.models.{name}.{key} ({was.get(key)!r} → {model.get(key)!r}) decides where "
                             "requests and the keys they carry are sent")
    bt = b.evals.get("target") or {"type": "prompt"}
    ht = h.evals.get("target") or {"type": "prompt"}
    if {k: v for k, v in ht.items() if k != "timeout_s"} != {k: v for k, v in bt.items() if k != "timeout_s"}:
        found.append("evals.target changed: it decides which code runs and where requests go")
    if bt.get("type") in ("command", "http"):
        changed = [p for p in g.run("diff", "--name-only", "-z", base, head).split("\0") if p]
        globs = bt.get("code") if isinstance(bt.get("code"), list) else None
        if globs:
            code = [p for p in changed if any(fnmatch.fnmatchcase(p, str(pat)) for pat in globs)]
        else:  # undeclared: anything outside the system's own files may be code the target runs
            data = set(system_files(g, base, config)) | set(system_files(g, head, config))
            code = [p for p in changed if p not in data]
        if code:
            more = f" and {len(code) - 5} more" if len(code) > 5 else ""
            found.append(f"{', '.join(code[:5])}{more}: code the `{bt['type']}` target may run, and a fork's code is "
                         "never run with the repository's secrets")
    return found + _fork_python(g, base, head, config)


def _fork_python(g: Git, base: str, head: str, config: str) -> list[str]:
    """Python the evaluation would take from the head: the checks and transforms of cases the head adds
    (the base's files judge the rest), or all of them when only the head has evals."""
    from gating.evals.assertions import PYTHON, base_type
    from gating.evals.dataset import DatasetError
    from gating.evals.judging import judging_for, self_judging

    try:
        bs, hs = build_snapshot(GitRevision(g, base), config), build_snapshot(GitRevision(g, head), config)
        own = self_judging(bs, base) if bs.manifest.evals else None
        j = judging_for(own, bs, hs, base)
    except (ManifestError, DatasetError):
        return []  # the normal check reports these
    if j is None:
        return []
    added = set(j.added)
    runs = [c.id for c in j.cases if c.id in added
            and (c.transform or any(base_type(a["type"]) == PYTHON for a in c.asserts))]
    if j.source == "head" and (j.python or j.evals.get("transform")):
        return ["the head's evals (the base has none) run the head's Python checks, and a fork's code is never "
                "run with the repository's secrets"]
    if runs:
        more = f" and {len(runs) - 5} more" if len(runs) > 5 else ""
        return [f"case{'s' if len(runs) != 1 else ''} {', '.join(runs[:5])}{more} added by this pull request run "
                "Python (a `python` assertion or a `transform`), and a fork's code is never run with the "
                "repository's secrets"]
    return []


def evaluate_artifact(ctx: CheckContext, settings: Settings, g: Git, env: Mapping[str, str],
                      event: Mapping[str, Any] | None, artifact: Path, max_bytes: int, *,
                      github: CheckGitHub | None, clock: Callable[[], float] = time.time) -> CheckRun:
    """Verify a collected artifact and evaluate the pull request's head with the base's checkout;
    ArtifactRefused (after the failed check is posted) when the artifact cannot be trusted."""
    facts = run_facts(event)
    ctx = replace(ctx, head_sha=facts.head_sha, fork=False, untrusted=None)
    remote = _remote(g, settings.remote)
    try:
        if facts.event != "pull_request":
            raise ArtifactRefused(f"the run that produced it was triggered by `{facts.event}`, not by a pull request")
        try:
            c = read(artifact, max_bytes)
        except ArtifactRefused as e:
            if facts.conclusion not in (None, "success"):
                raise ArtifactRefused(f"the collect run concluded `{facts.conclusion}` ({facts.url or 'no link'}): "
                                      f"{e}") from None
            raise
        if not ctx.repository or not ctx.token or github is None:
            raise ArtifactRefused("no repository or token to look the pull request up with")
        try:
            pull = github.pull(ctx.api_url, ctx.token, ctx.repository, c.pull_number)
        except GitHubFailure as e:
            raise ArtifactRefused(f"pull request #{c.pull_number} could not be read: {e}") from None
        verify_claims(c, facts, ctx.repository, pull)
        fetch_head(g, remote, c.pull_number, facts.head_sha, ctx.token)
        problems = verify_files(g, facts.head_sha, c, settings.config)
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise ArtifactRefused(f"it does not match head commit {facts.head_sha[:12]}: "
                                  + "; ".join(problems[:5]) + more)
    except ArtifactRefused as e:
        refuse(ctx, settings, f"the collected artifact was refused: {e}", github=github, clock=clock)
        raise ArtifactRefused(f"the collected artifact was refused: {e}") from None
    ctx = replace(ctx, base=pull["base"]["sha"], base_ref=pull["base"].get("ref"), pull_number=c.pull_number)
    base = resolve_base(g, ctx.base, facts.head_sha, remote)
    blocked = untrusted_changes(g, base, facts.head_sha, settings.config)
    if blocked:
        return refuse(ctx, settings, "not evaluated: this pull request from a fork changes what a privileged run never "
                      "takes from a fork: " + "; ".join(blocked) + ". A maintainer can review it and push the branch "
                      "to this repository, whose own `pull_request` run evaluates it.", github=github, base=base,
                      clock=clock)
    return run_check(ctx, settings, g, env, github=github, clock=clock)
