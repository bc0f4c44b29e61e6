"""Helpers for the `gating check` tests: a tiny LLM system on the GitHub emulator, pull requests, and
`gating check` run the way the Action runs it (a clone over smart HTTP with a token, the webhook
payload as GITHUB_EVENT_PATH, the GITHUB_* variables, models behind the local test LLM server).

The system's prompts carry `[[answer: ...]]` directives, so the test LLM server's answer is a pure
function of the prompt text: editing a prompt flips its cases exactly as a test needs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gating.commands.cli import main
from gating.git.repository import Git

GATING_YML = """\
version: 1
name: tiny-bot
components:
  models:
    bot: {provider: openai, model: gpt-4o-2024-08-06, params: {temperature: 0}}
  prompts:
    answer: {file: prompts/answer.md, model: bot}
    greet: {file: prompts/greet.md, model: bot}
evals:
  datasets: [evals/cases.jsonl]
  target: {type: prompt}
  thresholds: {pass_rate: ">= 0.1"}
  regression: {max_drop: 0.05, alpha: 0.05}
  traffic: {requests_per_day: 1000}
"""

ANSWER_CASES = [f"answer-{i:02d}" for i in range(1, 11)]
GREET_CASES = ["greet-1", "greet-2"]


def answer_prompt(reply: str) -> str:
    return f"Question {{{{ n }}}}: is the sky blue?\n[[answer: {reply}]]\n"


def greet_prompt(reply: str) -> str:
    return f"Say hello to {{{{ name }}}}.\n[[answer: {reply}]]\n"


def cases_jsonl() -> str:
    lines = [json.dumps({"id": cid, "prompt": "answer", "vars": {"n": i},
                         "assert": [{"type": "icontains", "value": "yes"}]}) for i, cid in enumerate(ANSWER_CASES, 1)]
    lines += [json.dumps({"id": cid, "prompt": "greet", "vars": {"name": cid},
                          "assert": [{"type": "icontains", "value": "hello"}]}) for cid in GREET_CASES]
    return "\n".join(lines) + "\n"


def write_system(root: Path, answer: str = "yes", greet: str = "hello there") -> Path:
    files = {"gating.yml": GATING_YML, "prompts/answer.md": answer_prompt(answer),
             "prompts/greet.md": greet_prompt(greet), "evals/cases.jsonl": cases_jsonl(),
             "README.md": "# tiny-bot\n"}
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return root


@dataclass
class Ran:
    """One `gating check` run: exit code, what it printed and wrote."""

    rc: int
    stdout: str
    stderr: str
    seconds: float
    llm_requests: int  # requests the test LLM server received during the run
    summary: str  # GITHUB_STEP_SUMMARY
    outputs: dict[str, str]  # GITHUB_OUTPUT
    report: dict[str, Any] | None
    junit: str | None
    clone: Git


def parse_outputs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    lines = iter(text.splitlines())
    for line in lines:
        if "<<" in line and "=" not in line.split("<<", 1)[0]:
            key, delim = line.split("<<", 1)
            value = []
            for more in lines:
                if more == delim:
                    break
                value.append(more)
            out[key] = "\n".join(value)
        elif "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


class Harness:
    """The emulated repository, its pull requests and `gating check` runs against them."""

    def __init__(self, emu: Any, repo: Any, llm: Any, tmp: Path, monkeypatch: Any):
        self.emu, self.repo, self.llm, self.tmp, self.mp = emu, repo, llm, tmp, monkeypatch
        self.token = emu.installation_token()
        self._n = 0

    def open_pr(self, branch: str, files: dict[str, Any], title: str = "Change", user: str = "alice",
                base: str = "main") -> dict[str, Any]:
        self.repo.commit_files(branch, files, title, base=self.repo.head(base))
        return self.emu.create_pull(self.repo, branch, base, title, user)

    def clone(self, token: str | None = None) -> Git:
        self._n += 1
        return self.repo.clone(self.tmp / f"ci-{self._n}", token or self.token)

    def env(self, sha: str, token: str, event_path: Path, work: Path, event_name: str = "pull_request") -> dict[str, str]:
        return {
            "GITHUB_ACTIONS": "true", "CI": "true", "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event_path), "GITHUB_API_URL": self.emu.api_url,
            "GITHUB_SERVER_URL": self.emu.web_url, "GITHUB_REPOSITORY": self.repo.full_name,
            "GITHUB_SHA": sha, "GITHUB_TOKEN": token, "GITHUB_RUN_ID": "4242",
            "GITHUB_STEP_SUMMARY": str(work / "step-summary.md"), "GITHUB_OUTPUT": str(work / "output.txt"),
            **self.llm.env(),
        }

    def event(self, pr: dict[str, Any], action: str = "opened", fork: bool = False) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if fork:
            extra["pull_request"] = {"head": {"repo": {"full_name": "mallory/support-bot", "fork": True,
                                                       "name": "support-bot"}}}
        return self.emu.webhook("pull_request", action, repo=self.repo, number=pr["number"], **extra).payload

    def run(self, pr: dict[str, Any], *, args: tuple[str, ...] = (), token: str | None = None, fork: bool = False,
            action: str = "opened", clone: Git | None = None, env: dict[str, str | None] | None = None) -> Ran:
        return self.run_event("pull_request", self.event(pr, action, fork), pr["head"]["sha"], args=args,
                              token=token, clone=clone, env=env)

    def run_event(self, event_name: str, payload: dict[str, Any], sha: str, *, args: tuple[str, ...] = (),
                  token: str | None = None, clone: Git | None = None,
                  env: dict[str, str | None] | None = None) -> Ran:
        """`env` overrides the job's environment (None unsets a variable)."""
        token = token or self.token
        clone = clone or self.clone(token)
        self._n += 1
        work = self.tmp / f"run-{self._n}"
        work.mkdir()
        event_path = work / "event.json"
        event_path.write_text(json.dumps(payload), encoding="utf-8")
        for k in ("GATING_CACHE_DIR", "GATING_PROVIDER", "GH_TOKEN", "GITHUB_BASE_REF", "RUNNER_TEMP"):
            self.mp.delenv(k, raising=False)
        for k, v in {**self.env(sha, token, event_path, work, event_name), **(env or {})}.items():
            if v is None:
                self.mp.delenv(k, raising=False)
            else:
                self.mp.setenv(k, v)
        report, junit = work / "report.json", work / "junit.xml"
        before = self.llm.requests
        out, err = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["-C", str(clone.root), "check", "--json", str(report), "--junit", str(junit), *args])
        seconds = time.monotonic() - t0
        summary = work / "step-summary.md"
        outputs = work / "output.txt"
        return Ran(rc, out.getvalue(), err.getvalue(), seconds, self.llm.requests - before,
                   summary.read_text(encoding="utf-8") if summary.exists() else "",
                   parse_outputs(outputs.read_text(encoding="utf-8")) if outputs.exists() else {},
                   json.loads(report.read_text(encoding="utf-8")) if report.exists() else None,
                   junit.read_text(encoding="utf-8") if junit.exists() else None, clone)

    def check_runs(self, sha: str) -> list[dict[str, Any]]:
        return self.emu.list_check_runs(self.repo, head_sha=sha)

    def requests(self, operation: str) -> list[Any]:
        return [r for r in self.emu.requests if r.operation == operation]


def clean_env() -> dict[str, str]:
    """The process environment without any GitHub Actions variables (for subprocess runs)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "RUNNER_", "GATING_"))}
