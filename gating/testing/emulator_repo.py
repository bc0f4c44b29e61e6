"""RepoHandle: what a test holds for an emulated repository (its bare repo, URLs, commit helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gating.git.repository import Git
from gating.testing.emulator_git import BareRepo, Person, RefConflict
from gating.testing.emulator_state import Repo

if TYPE_CHECKING:
    from gating.testing.github_emulator import Emulator


class RepoHandle:
    def __init__(self, emulator: Emulator, record: Repo):
        self.emulator = emulator
        self.record = record

    @property
    def full_name(self) -> str:
        return self.record.full_name

    @property
    def owner(self) -> str:
        return self.record.owner

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def default_branch(self) -> str:
        return self.record.default_branch

    @property
    def bare_path(self) -> Path:
        return self.record.bare_path

    @property
    def git(self) -> Git:
        return Git(self.record.bare_path)

    @property
    def _bare(self) -> BareRepo:
        return self.emulator.bare(self.record)

    @property
    def clone_url(self) -> str:
        return f"{self.emulator.web_url}/{self.full_name}.git"

    def authed_url(self, token: str) -> str:
        scheme, rest = self.clone_url.split("://", 1)
        return f"{scheme}://x-access-token:{token}@{rest}"

    def head(self, branch: str | None = None) -> str:
        name = branch or self.default_branch
        sha = self._bare.ref(f"refs/heads/{name}")
        if sha is None:
            raise KeyError(f"{self.full_name} has no branch {name}")
        return sha

    def _person(self, login: str | None) -> Person:
        u = self.emulator.user_record(login or "gating-dev")
        return Person(u.name or u.login, u.email or "", int(self.emulator.now()))

    def _start(self, branch: str, base: str | None) -> str | None:
        bare = self._bare
        if base is not None:
            sha = bare.resolve_commit(base)
            if sha is None:
                raise KeyError(f"{self.full_name} has no revision {base}")
            return sha
        return bare.ref(f"refs/heads/{branch}") or bare.ref(f"refs/heads/{self.default_branch}")

    def _advance(self, branch: str, sha: str) -> None:
        old = self._bare.ref(f"refs/heads/{branch}")
        try:
            self._bare.update_ref(f"refs/heads/{branch}", sha, old)
        except RefConflict as e:
            raise RuntimeError(f"{self.full_name}: branch {branch} moved while committing") from e

    def push_dir(self, path: str | Path, branch: str | None = None, message: str = "Update",
                 parent: str | None = None, author: str | None = None) -> str:
        """Commit the whole directory as the tree of a new commit on `branch`."""
        branch = branch or self.default_branch
        with self.emulator.lock:
            bare = self._bare
            tree = bare.tree_from_dir(Path(path))
            start = self._start(branch, parent)
            who = self._person(author)
            sha = bare.write_commit(tree, [start] if start else [], message, who, who)
            self._advance(branch, sha)
            return sha

    def commit_files(self, branch: str, files: dict[str, Any], message: str, base: str | None = None,
                     author: str | None = None) -> str:
        """Change files (str or bytes content; None deletes) on top of `branch` (or `base`)."""
        with self.emulator.lock:
            bare = self._bare
            start = self._start(branch, base)
            entries = []
            for path, content in files.items():
                if content is None:
                    entries.append({"path": path, "mode": "100644", "type": "blob", "sha": None})
                else:
                    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
                    entries.append({"path": path, "mode": "100644", "type": "blob", "sha": bare.write_blob(data)})
            tree = bare.write_tree(entries, bare.tree_of(start) if start else None)
            who = self._person(author)
            sha = bare.write_commit(tree, [start] if start else [], message, who, who)
            self._advance(branch, sha)
            return sha

    def note(self, ref: str, commit: str) -> bytes | None:
        full = ref if ref.startswith("refs/") else f"refs/notes/{ref}"
        return self.git.notes_show(full, commit)

    def clone(self, dest: str | Path, token: str | None = None) -> Git:
        """A real `git clone` over smart HTTP (with the token as x-access-token basic auth)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        url = self.authed_url(token) if token else self.clone_url
        Git(dest.parent).run("clone", "--quiet", url, dest.name)
        g = Git(dest)
        g.run("config", "user.name", "gating")
        g.run("config", "user.email", "gating@example.invalid")
        return g
