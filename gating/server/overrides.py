"""The overrides the App saw created, kept in its own database next to the job queue.

Any writer may edit anyone's comment on GitHub, so an override is never read back from a comment
body. It is recorded once, when the `issue_comment.created` delivery is handled: the sender, their
permission as the API reports it then, the reason, and the pull request's head SHA then. Later
deliveries only take away: an edit or a deletion of the comment voids it for good, a command written
into a comment by an edit is recorded as void, and every push the App receives is noted so an
override given before it stops counting. A redelivery of the same comment (any delivery id) changes
nothing: the comment id is the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gating.policy import OverrideAct
from gating.server.jobs import Job, JobQueue

if TYPE_CHECKING:
    from gating.server.handlers import JobContext

_COLS = "login, reason, head_sha, permission, created_at, url, void"


@dataclass(frozen=True)
class Seen:
    """An override comment as the delivery reports it."""

    repo: str
    number: int
    comment_id: int
    login: str  # the sender GitHub reports
    reason: str
    created_at: str
    url: str


class OverrideStore:
    """The overrides table (and the pushes that outdate them) in the job queue's database."""

    def __init__(self, queue: JobQueue):
        self.queue = queue

    def record_created(self, seen: Seen, permission: str, head_sha: str, job: Job) -> bool:
        """Record an override the moment it was seen created; False when this comment was recorded
        before (by another delivery of it, or by an edit that came first): nothing new happens."""
        me = f"{job.delivery} {job.handler}"
        self.queue.execute(
            "INSERT INTO overrides (repo, number, comment_id, login, reason, permission, head_sha, "
            "created_at, url, received, job) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (seen.repo.lower(), seen.number, seen.comment_id, seen.login, seen.reason, permission, head_sha,
             seen.created_at, seen.url, job.created_at, me))
        rows = self.queue.query("SELECT job FROM overrides WHERE repo = ? AND comment_id = ?",
                                (seen.repo.lower(), seen.comment_id))
        return bool(rows[0][0] == me)

    def void(self, seen: Seen, why: str, written_in: str, job: Job) -> bool:
        """An edit or deletion of the comment: a recorded override becomes void with `why`; a comment
        with none recorded gets a void entry saying `written_in` (so the check says why it is ignored).
        False when nothing changed (a redelivery, or a second edit)."""
        key = (seen.repo.lower(), seen.comment_id)
        if self.queue.execute("UPDATE overrides SET void = ? WHERE repo = ? AND comment_id = ? AND void = ''",
                              (why, *key)).rowcount:
            return True
        return bool(self.queue.execute(
            "INSERT INTO overrides (repo, number, comment_id, login, reason, permission, head_sha, "
            "created_at, url, received, job, void) VALUES (?, ?, ?, ?, ?, '', '', ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (key[0], seen.number, seen.comment_id, seen.login, seen.reason, seen.created_at, seen.url,
             job.created_at, f"{job.delivery} {job.handler}", written_in)).rowcount)

    def record_push(self, repo: str, number: int, head_sha: str, job: Job) -> None:
        """A push reached the App: overrides received before it no longer count (unless a rule keeps
        them). The same head pushed again is noted once, so a redelivery voids nothing new."""
        self.queue.execute("INSERT INTO pushes (repo, number, head_sha, received) VALUES (?, ?, ?, ?) "
                           "ON CONFLICT DO NOTHING",
                           (repo.lower(), number, head_sha, job.created_at))

    def acts(self, repo: str, number: int) -> list[OverrideAct]:
        """Every override recorded on a pull request, oldest first, as the policy reads them."""
        rows = self.queue.query(
            f"SELECT {_COLS}, EXISTS (SELECT 1 FROM pushes p WHERE p.repo = o.repo AND p.number = o.number "
            "AND p.received >= o.received) FROM overrides o WHERE repo = ? AND number = ? ORDER BY received, comment_id",
            (repo.lower(), number))
        return [OverrideAct(login, reason, head_sha, permission, created_at, url, void, pushed_after=bool(pushed))
                for login, reason, head_sha, permission, created_at, url, void, pushed in rows]



def store(ctx: JobContext) -> OverrideStore:
    """The store in the running App's database (a handler run outside the App opens the same file)."""
    return OverrideStore(ctx.queue if ctx.queue is not None else JobQueue(ctx.settings.queue_location))


def source(ctx: JobContext, repo: str) -> Callable[[int], list[OverrideAct]]:
    """Pull request number -> its recorded overrides, for the merged audit entry."""
    s = store(ctx)
    return lambda number: s.acts(repo, number)
