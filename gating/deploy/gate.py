"""Deciding a deployment protection rule: may commit C be deployed to environment E?

Sans-I/O: the door hands over the App's own audit entries (signature-checked), the `deploy:` section
of gating.yml on the default branch, and the snapshot digest rebuilt at C; this decides and says why.

C is approved when
- E is an exception (`deploy.exceptions`), or
- C restores a known-good snapshot (C is the commit of a `rolled_back` entry, or merged its pull
  request, whose target has a `known_good` entry, and the system at C has that target's recorded
  snapshot digest), or
- C carries a `merged` entry whose eval evidence passed (or an admin override is recorded), whose
  `gating / approval` check run (the App's own, recorded at merge on the pull request's head)
  concluded success (or an override is recorded), whose recorded snapshot digest is the one rebuilt at C, and,
  where E follows another environment in `deploy.environments`, the same snapshot is known-good in
  that environment with no monitor rule fired on it since.
Anything else is rejected with every missing piece named, and how to get it.

Merged entries written before the approval check was recorded (no `checks` in the predicate) are
"not recorded", which rejects (fail closed): whether gating / approval passed cannot be told from
the entry, and a recorded approving review is not the same fact (the rules may ask for more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gating.audit.entry import Entry
from gating.policy import APPROVAL_CHECK


@dataclass(frozen=True)
class Chain:
    """deploy.* of gating.yml: the gated environments in promotion order, and the exceptions."""

    environments: tuple[str, ...] = ()
    exceptions: tuple[str, ...] = ()

    def previous(self, environment: str) -> str | None:
        i = self.environments.index(environment) if environment in self.environments else 0
        return self.environments[i - 1] if i > 0 else None


def chain_of(deploy: Mapping[str, Any] | None) -> Chain:
    d = deploy or {}
    return Chain(tuple(d.get("environments") or ()), tuple(d.get("exceptions") or ()))


MAX_COMMENT = 1024  # GitHub refuses a longer review comment (422 "Comment exceeded maximum length ...")


@dataclass(frozen=True)
class Decision:
    approved: bool
    basis: str  # merged, rollback, exception, or "" (rejected)
    reasons: tuple[str, ...] = ()  # what is missing, each with how to get it (rejections)
    evidence: dict[str, Any] = field(default_factory=dict)  # audit seqs and digests the decision rests on

    @property
    def state(self) -> str:
        return "approved" if self.approved else "rejected"

    def comment(self, commit: str, environment: str, limit: int = MAX_COMMENT) -> str:
        """The review comment GitHub shows on the run, within GitHub's limit: whole reasons while they
        fit, then how many were left out (the signed decision entry keeps them all)."""
        if self.approved:
            return f"gating: {commit[:12]} approved for {environment}: {self.evidence.get('summary', self.basis)}"[:limit]
        lines = [f"gating: {commit[:12]} rejected for {environment}:"] + [f"- {r}" for r in self.reasons]
        text = "\n".join(lines)
        for kept in range(len(lines) - 1, 1, -1):  # at least one reason, cut if need be
            if len(text) <= limit:
                break
            left = len(lines) - kept
            tail = (f"- ... {left} more reason{'s' if left > 1 else ''}: every reason is in the signed deploy_rejected "
                    f"entry (gating audit log)")
            text = "\n".join(lines[:kept] + [tail])
        return text if len(text) <= limit else text[:limit - 3] + "..."


def _newest(entries: Sequence[Entry], event: str, commit: str) -> Entry | None:
    found = [e for e in entries if e.event == event and e.commit == commit]
    return max(found, key=lambda e: e.seq) if found else None


def _merged_digest(entries: Sequence[Entry], commit: str) -> str | None:
    m = _newest(entries, "merged", commit)
    return m.predicate.get("snapshot_digest") if m else None


def _env(e: Entry) -> str | None:
    return (e.predicate.get("deployment") or {}).get("environment")


def rollback_basis(entries: Sequence[Entry], commit: str, digest: str) -> Entry | None:
    """The rolled_back entry of C itself (a direct rollback commit) or of the pull request C merged
    (its merged entry names it), whose target is known-good and whose system is the one at C. Only
    the rollback's own commit counts: a commit that merely has a known-good system (with any code
    beside it) pushed around the road is no rollback."""
    good = {e.commit for e in entries if e.event == "known_good"}
    merged = _newest(entries, "merged", commit)
    pr = merged.predicate.get("pull_request") if merged else None
    for e in sorted(entries, key=lambda e: -e.seq):
        if e.event != "rolled_back" or not (e.commit == commit or (pr and e.predicate.get("pull_request") == pr)):
            continue
        target = (e.predicate.get("rollback") or {}).get("target")
        if target in good and _merged_digest(entries, target) == digest:
            return e
    return None


def healthy_in(entries: Sequence[Entry], environment: str, commit: str, digest: str) -> tuple[Entry | None, str]:
    """The known_good entry of `environment` for this snapshot (C itself or a commit with the same
    recorded system), and why not when there is none or a rule fired on it since."""
    same = {commit} | {e.commit for e in entries if e.event == "merged" and e.predicate.get("snapshot_digest") == digest}
    good = [e for e in entries if e.event == "known_good" and e.commit in same and _env(e) == environment]
    if not good:
        deployed = [e for e in entries if e.event in ("deployed", "deploy_failed") and e.commit in same
                    and _env(e) == environment]
        if deployed:
            d = max(deployed, key=lambda e: e.seq)
            state = "its deployment failed" if d.event == "deploy_failed" else "its bake has not passed yet"
            return None, (f"not healthy in {environment}: deployed there (audit seq {d.seq}) but {state}. Wait for "
                          f"the bake (monitor.bake_minutes) to pass with no rule firing, or fix and deploy again")
        return None, (f"not deployed and healthy in {environment}: no known_good entry for this snapshot there. "
                      f"Deploy {commit[:12]} to {environment} first and let its bake pass")
    g = max(good, key=lambda e: e.seq)
    fired = [e for e in entries if e.event == "monitor_alert" and e.commit in same and e.seq > g.seq]
    if fired:
        f = max(fired, key=lambda e: e.seq)
        rule = ((f.predicate.get("health") or {}).get("rule") or {}).get("rule")
        return None, (f"not healthy in {environment}: monitor rule {rule} fired on it (audit seq {f.seq}) after it "
                      f"became known-good. Fix the regression and promote a new change through {environment}")
    return g, ""


def approval_missing(p: Mapping[str, Any], seq: int, app_id: int | str | None = None) -> str:
    """Why the merged entry's `gating / approval` does not count ("" when it does): not recorded (an
    entry older than the field), no run of the App, a run of another app, or a conclusion other than
    success. `app_id`: the App's own id, when the caller knows it."""
    how = (f"Get the approvals {APPROVAL_CHECK} asks for before merging, or have an admin record `/gating override "
           f"<reason>` on the pull request before merging")
    pr = p.get("pull_request")
    if "checks" not in p:
        return (f"approval not recorded: the merged entry of #{pr} (audit seq {seq}) predates recording "
                f"{APPROVAL_CHECK} at merge, so whether the required approvals were present is unknown. Merge the "
                f"change through a new pull request (its merge records {APPROVAL_CHECK}), or deploy a rollback to a "
                f"known-good snapshot (/rollback last-good)")
    run = (p.get("checks") or {}).get(APPROVAL_CHECK)
    if not isinstance(run, Mapping):
        return f"approval missing: no {APPROVAL_CHECK} check run of the App was on the head of #{pr} at merge. {how}"
    if app_id is not None and str(run.get("app_id")) != str(app_id):
        return (f"approval missing: the {APPROVAL_CHECK} run recorded at merge of #{pr} was posted by "
                f"{run.get('app') or 'another app'} (app id {run.get('app_id')}), not by this App. {how}")
    if run.get("conclusion") != "success":
        state = run.get("conclusion") or run.get("status") or "unknown"
        title = f" ({run['title']})" if run.get("title") else ""
        return f"approval missing: {APPROVAL_CHECK} on the head of #{pr} was {state} at merge{title}. {how}"
    return ""


def decide(entries: Sequence[Entry], commit: str, environment: str, chain: Chain, digest: str | None,
           branch: str = "main", app_id: int | str | None = None) -> Decision:
    """The decision for a deployment of `commit` to `environment`; `digest` is the snapshot digest
    rebuilt at the commit (None: no valid gating.yml there); `app_id` the App whose
    `gating / approval` counts."""
    if environment in chain.exceptions:
        return Decision(True, "exception", evidence={"summary": f"{environment} is listed in deploy.exceptions of "
                                                                f"gating.yml on {branch}"})
    if environment not in chain.environments:
        listed = ", ".join(chain.environments) or "none"
        return Decision(False, "", (f"environment not gated: {environment} is not in deploy.environments of gating.yml "
                                    f"on {branch} (gated: {listed}). Add it to deploy.environments (or "
                                    f"deploy.exceptions), or disable the App's rule on the environment",))
    if digest is None:
        return Decision(False, "", (f"no LLM system: {commit[:12]} has no valid gating.yml, so there is no snapshot "
                                    f"to check. Deploy a commit merged through a pull request",))
    rb = rollback_basis(entries, commit, digest)
    if rb is not None:
        target = rb.predicate["rollback"]["target"]
        return Decision(True, "rollback", evidence={
            "summary": f"a rollback to the known-good snapshot of {target[:12]} (audit seq {rb.seq})",
            "rolled_back": rb.seq, "target": target, "snapshot_digest": digest})
    merged = _newest(entries, "merged", commit)
    if merged is None:
        return Decision(False, "", (
            f"not an audited merge: the audit log has no merged entry for {commit[:12]} (pushed around the pull "
            f"request road?). Merge the change through a pull request so gating / eval and gating / approval run "
            f"and the App records it, or deploy a rollback (/rollback last-good)",), {"snapshot_digest": digest})
    p = merged.predicate
    reasons: list[str] = []
    recorded = p.get("snapshot_digest")
    if recorded != digest:
        reasons.append(f"system changed after merge: the merged entry (audit seq {merged.seq}) recorded snapshot "
                       f"{str(recorded)[:19]}, the system at {commit[:12]} is {digest[:19]}. Deploy the commit "
                       f"that was merged, or merge the change through a pull request")
    overrides = p.get("overrides") or []
    evals = p.get("evals") or {}
    verdict = evals.get("verdict")
    if verdict != "pass" and not overrides:
        got = (f"the eval verdict recorded at merge is {verdict} ({evals.get('source')})" if evals
               else "no eval evidence was recorded at merge")
        reasons.append(f"eval evidence missing: {got}. Merge a change whose gating / eval passes, or have an admin "
                       f"record `/gating override <reason>` on the pull request before merging")
    if not overrides:
        missing = approval_missing(p, merged.seq, app_id)
        if missing:
            reasons.append(missing)
    evidence: dict[str, Any] = {"merged": merged.seq, "snapshot_digest": digest, "verdict": verdict,
                                "overrides": len(overrides)}
    prev = chain.previous(environment)
    if prev is not None:
        good, why = healthy_in(entries, prev, commit, digest)
        if good is None:
            reasons.append(f"promotion order: {why}")
        else:
            evidence["previous"] = {"environment": prev, "known_good": good.seq, "commit": good.commit}
    if reasons:
        return Decision(False, "", tuple(reasons), evidence)
    how = f"merged through #{p.get('pull_request')} (audit seq {merged.seq}), evals {verdict}" + (
        f", {len(overrides)} override(s)" if overrides else "") + ", snapshot unchanged"
    if prev is not None:
        how += f", known-good in {prev} (audit seq {evidence['previous']['known_good']})"
    evidence["summary"] = how
    return Decision(True, "merged", evidence=evidence)


def weight_of(status: Mapping[str, Any]) -> float | None:
    """The traffic weight a rollout tool reports on a deployment status: `gating.weight=N` in the
    log_url/environment_url query or in the description (N percent, 0-100)."""
    import re
    from urllib.parse import parse_qs, urlsplit

    for url in (status.get("log_url"), status.get("target_url"), status.get("environment_url")):
        if isinstance(url, str) and url:
            q = parse_qs(urlsplit(url).query).get("gating.weight")
            if q:
                return _weight(q[-1])
    m = re.search(r"gating\.weight\s*=\s*([0-9]+(?:\.[0-9]+)?)", str(status.get("description") or ""))
    return _weight(m.group(1)) if m else None


def _weight(text: str) -> float | None:
    try:
        w = float(text.rstrip("%"))
    except ValueError:
        return None
    return w if 0 <= w <= 100 else None
