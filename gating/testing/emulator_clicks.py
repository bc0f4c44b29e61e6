"""What people click on GitHub's pages, and the webhooks GitHub sends the App for it: "Re-run" on a
check run or a check suite, a check run's own buttons, and accepting an App's new permissions."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gating.testing.emulator_state import permission_at_least

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator


class EmulatorClicks:
    """Mixed into Emulator. Events go only to the App a check run or suite belongs to (another app's
    runs, the Actions app's, send the emulated App nothing), as GitHub does."""

    def _may_rerun(self: Emulator, repo: Any, user: str) -> Any:
        r = self.repo_record(repo)
        if not permission_at_least(self.permission_of(r, user), "write"):
            raise PermissionError(f"{user} has no write access to {r.full_name}: GitHub shows no re-run button")
        return r

    def rerequest_check_run(self: Emulator, repo: Any, check_run_id: int, user: str) -> None:
        """"Re-run" on one check run: `check_run.rerequested` to the App that made it."""
        with self.lock:
            r = self._may_rerun(repo, user)
            run = r.check_runs[check_run_id]
            if run.app_id == self.app.app_id:
                self._emit("check_run", "rerequested", r, check_run_id=run.id, sender=user)

    def rerequest_check_suite(self: Emulator, repo: Any, check_suite_id: int, user: str) -> None:
        """"Re-run all checks" of one app's suite: `check_suite.rerequested` to that App."""
        with self.lock:
            r = self._may_rerun(repo, user)
            suite = r.check_suites[check_suite_id]
            if suite.app_id == self.app.app_id:
                self._emit("check_suite", "rerequested", r, check_suite_id=suite.id, sender=user)

    def request_check_action(self: Emulator, repo: Any, check_run_id: int, identifier: str, user: str) -> None:
        """A button the check run offers (its `actions`): `check_run.requested_action` with its identifier."""
        with self.lock:
            r = self._may_rerun(repo, user)
            run = r.check_runs[check_run_id]
            if identifier not in [a.get("identifier") for a in run.actions]:
                raise ValueError(f"check run {check_run_id} offers no button {identifier!r}")
            if run.app_id == self.app.app_id:
                self._emit("check_run", "requested_action", r, check_run_id=run.id, sender=user,
                           requested_action={"identifier": identifier})

    def accept_permissions(self: Emulator, permissions: dict[str, str], user: str | None = None) -> None:
        """An owner accepts the App's new permissions: later installation tokens carry them (tokens
        already minted keep what they had until they expire), then
        `installation.new_permissions_accepted`."""
        with self.lock:
            self.installation_permissions.update(permissions)
            self._emit("installation", "new_permissions_accepted", None, sender=user or self.app_owner)
