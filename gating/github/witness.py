"""The App's witnesses of audit entries over the checks API (gating.audit_witness decides what they
mean): create one per entry, once, and read them back for `gating audit verify`."""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gating.audit import Entry
from gating.audit_witness import WITNESS_CHECK, Witness, output, parse_run
from gating.github.client import GitHubError
from gating.github.repo import Repo


def witness_entry(repo: Repo, entry: Entry, public_key: Ed25519PublicKey, app_id: int) -> tuple[int, bool]:
    """(check run id, created) of the App's witness of `entry` on its commit; a witness already there
    (a redelivery, a retried job, the reconciliation) is not made twice."""
    for run in repo.check_runs(entry.commit, WITNESS_CHECK):
        w = parse_run(run)
        if w.app_id == app_id and w.record and w.record["seq"] == entry.seq and w.record["hash"] == entry.digest:
            return w.run_id, False
    body = {"name": WITNESS_CHECK, "head_sha": entry.commit, "status": "completed", "conclusion": "success",
            "external_id": f"gating-audit-seq-{entry.seq}", "output": output(entry, public_key)}
    return int(repo.create_check_run(body)["id"]), True


def read_witnesses(repo: Repo, commits: Iterable[str]) -> list[Witness]:
    """Every `gating / audit` run on these commits, by any app; a commit GitHub does not have (422,
    404: never pushed there) has none."""
    out: list[Witness] = []
    for sha in dict.fromkeys(commits):
        try:
            runs = repo.check_runs(sha, WITNESS_CHECK)
        except GitHubError as e:
            if e.status in (404, 422):
                continue
            raise
        out += [parse_run(r) for r in runs if r.get("name") == WITNESS_CHECK]
    return out
