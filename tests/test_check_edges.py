"""`gating check` (the Action) at GitHub's edges: a secondary rate limit on the last write, and a
write that fails after it happened. Real git over smart HTTP, the emulator, the test LLM server."""

from __future__ import annotations

import pytest
from check_support import Harness, greet_prompt


def warmer(h: Harness) -> dict:
    return h.open_pr("greet-warmly", {"prompts/greet.md": greet_prompt("hello and welcome")}, "Warmer greeting")


def test_a_secondary_rate_limit_on_the_last_update_is_waited_out(h: Harness):
    pr = warmer(h)
    h.emu.faults.add(method="PATCH", path=r"/check-runs/\d+$", kind="secondary_rate_limit", retry_after=None)
    ran = h.run(pr, args=("--post-wait", "0.4"))
    assert ran.rc == 0, ran.stderr
    [run] = h.check_runs(pr["head"]["sha"])
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert [r.status for r in h.emu.requests if r.method == "PATCH"] == [403, 200]
    assert "read-only" not in ran.summary and "Nothing was posted" not in ran.summary


@pytest.mark.parametrize("status", [403, 429])
def test_a_check_run_that_cannot_be_completed_is_said_so_and_fails_the_job(h: Harness, status: int):
    pr = warmer(h)
    h.emu.faults.add(method="PATCH", path=r"/check-runs/\d+$", kind="secondary_rate_limit", retry_after=None,
                     times=None, status=status)
    ran = h.run(pr, args=("--post-wait", "0.3"))
    [run] = h.check_runs(pr["head"]["sha"])
    assert run["status"] == "in_progress"  # GitHub still shows it running: the job must not look green
    assert ran.rc == 1
    said = (f"`gating / eval` was not completed on GitHub: its secondary rate limit still refused the update "
            f"after 0.3 s of waiting (the budget is 0.3 s, --post-wait); check run {run['id']} stays in progress, "
            "so this job fails; the verdict was pass (success)")
    assert f"gating: error: {said}" in ran.stderr
    assert said in ran.summary
    assert "read-only" not in ran.summary and "checks: write" not in ran.summary
    assert [r.status for r in h.emu.requests if r.method == "PATCH"] == [status, status]  # waited, tried again


@pytest.mark.parametrize("kind", ["5xx_after_write", "reset_after_write"])
def test_a_check_run_created_before_the_error_is_not_created_twice(h: Harness, kind: str):
    pr = warmer(h)
    h.emu.faults.add(method="POST", path=r"/check-runs$", kind=kind, status=502)
    ran = h.run(pr)
    assert ran.rc == 0, ran.stderr
    [run] = h.check_runs(pr["head"]["sha"])
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert [r.operation for r in h.emu.requests if r.method == "POST" and "check-runs" in r.path] == [
        "checks/create", f"fault/{kind}"]
    h.emu.take_problems()


def test_the_sticky_comment_made_before_the_error_is_not_made_twice(h: Harness):
    pr = warmer(h)
    h.emu.faults.add(method="POST", path=r"/issues/\d+/comments$", kind="5xx_after_write", status=502)
    ran = h.run(pr, args=("--comment",))
    assert ran.rc == 0, ran.stderr
    assert len(h.emu.list_comments(h.repo, pr["number"])) == 1
    assert "could not comment" not in ran.stderr
