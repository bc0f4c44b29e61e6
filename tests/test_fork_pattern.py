"""Pull requests from forks: `gating check` refuses a fork's head under privileged events, and the
fork pattern (`gating collect` on `pull_request`, `gating check --from-artifact` on `workflow_run`)
posts `gating / eval` on the head SHA, against the GitHub emulator (a real fork, refs/pull/N/head,
real-shaped payloads) and the test LLM server. The artifact is treated as an attacker would write it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
from check_support import Harness, answer_prompt, greet_prompt, write_system

from gating.commands.cli import main


class Forks(Harness):
    """acme/tiny-bot, mallory's fork of it, and both halves of the fork pattern run as Actions would."""

    def __init__(self, *a: Any):
        super().__init__(*a)
        self.fork = self.emu.fork_repo(self.repo, "mallory")
        self.actions = self.emu.actions_token()  # the workflow_run run's GITHUB_TOKEN (checks: write)

    def open_fork_pr(self, files: dict[str, Any], branch: str = "tweak") -> dict[str, Any]:
        self.emu.push(self.fork, branch, files, "A change from a fork", user="mallory")
        return self.emu.create_pull(self.repo, f"mallory:{branch}", "main", "From a fork", "mallory")

    def collect(self, pr: dict[str, Any]) -> Path:
        """The unprivileged run: a read-only token, the pull_request payload, `gating collect`."""
        token = self.emu.read_only_token()
        clone = self.clone(token)
        self._n += 1
        work = self.tmp / f"collect-{self._n}"
        work.mkdir()
        event = work / "event.json"
        event.write_text(json.dumps(self.event(pr)), encoding="utf-8")
        for k, v in self.env(pr["head"]["sha"], token, event, work).items():
            self.mp.setenv(k, v)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["-C", str(clone.root), "collect", "--out", str(work / "artifact")]) == 0
        assert "collected" in out.getvalue()
        return work / "artifact"

    def evaluate(self, pr: dict[str, Any], artifact: Path, *args: str, **run: Any):
        """The privileged run: the base branch checked out, the workflow_run payload, --from-artifact."""
        payload = self.emu.webhook("workflow_run", "completed", repo=self.repo, number=pr["number"], **run).payload
        return self.run_event("workflow_run", payload, self.repo.head("main"), token=self.actions,
                              args=("--from-artifact", str(artifact), *args))

    def eval_run(self, sha: str) -> dict[str, Any]:
        [run] = [r for r in self.check_runs(sha) if r["name"] == "gating / eval"]
        return run


@pytest.fixture
def fx(github, llm, tmp_path: Path, monkeypatch) -> Forks:
    repo = github.create_repo("acme/tiny-bot", source_dir=write_system(tmp_path / "src"))
    return Forks(github, repo, llm, tmp_path, monkeypatch)


def tamper(artifact: Path, change) -> None:
    path = artifact / "gating-collect.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


def put_file(doc: dict[str, Any], path: str, data: bytes) -> None:
    """A file swapped in with a self-consistent sha256 and size (as a careful attacker would)."""
    doc["files"][path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                          "base64": base64.b64encode(data).decode()}


# -- the whole road --------------------------------------------------------------------------------


def test_fork_pull_request_is_evaluated_by_the_workflow_run_and_gets_its_check(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    assert pr["head"]["repo"]["full_name"] == "mallory/tiny-bot" and pr["head"]["repo"]["fork"]
    artifact = fx.collect(pr)
    ran = fx.evaluate(pr, artifact)
    assert ran.rc == 1, ran.stderr
    run = fx.eval_run(pr["head"]["sha"])
    assert (run["status"], run["conclusion"], run["app"]["slug"]) == ("completed", "failure", "github-actions")
    assert "answer-01" in run["output"]["title"] and "regressed" in run["output"]["title"]
    assert ran.llm_requests > 0  # the head's prompts were really evaluated, with the base's settings
    assert ran.outputs["verdict"] == "fail" and ran.report["verdict"] == "fail"


def test_a_harmless_fork_change_passes_and_a_push_to_the_fork_is_evaluated_anew(fx: Forks):
    pr = fx.open_fork_pr({"prompts/greet.md": greet_prompt("hello, friend")})
    ran = fx.evaluate(pr, fx.collect(pr))
    assert ran.rc == 0, ran.stderr
    assert fx.eval_run(pr["head"]["sha"])["conclusion"] == "success"
    new = fx.emu.push(fx.fork, "tweak", {"prompts/answer.md": answer_prompt("no")}, "worse", user="mallory")
    pr = fx.emu.get_pull(fx.repo, pr["number"])
    assert pr["head"]["sha"] == new
    ran = fx.evaluate(pr, fx.collect(pr))
    assert ran.rc == 1 and fx.eval_run(new)["conclusion"] == "failure"


# -- a hostile artifact ----------------------------------------------------------------------------


def _refused(fx: Forks, pr: dict[str, Any], ran, words: str) -> dict[str, Any]:
    assert ran.rc == 2, (ran.stdout, ran.stderr)
    assert words in ran.stderr
    run = fx.eval_run(pr["head"]["sha"])  # reported on the real head, named by the event
    assert run["conclusion"] == "failure"
    assert run["output"]["title"].startswith("Error: the collected artifact was refused")
    assert words in run["output"]["summary"]
    assert ran.llm_requests == 0 and ran.outputs["verdict"] == "error"
    return run


def test_artifact_naming_another_head_is_refused(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    artifact = fx.collect(pr)
    tamper(artifact, lambda d: d.update(head_sha=fx.repo.head("main")))
    _refused(fx, pr, fx.evaluate(pr, artifact), f"it names head {fx.repo.head('main')[:12]}, but the run")


def test_artifact_file_that_differs_from_the_head_commit_is_refused(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    artifact = fx.collect(pr)
    tamper(artifact, lambda d: put_file(d, "prompts/answer.md", answer_prompt("yes").encode()))
    _refused(fx, pr, fx.evaluate(pr, artifact), "prompts/answer.md differs from the head commit's prompts/answer.md")


def test_artifact_with_an_extra_file_or_a_path_out_of_the_tree_is_refused(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    artifact = fx.collect(pr)
    tamper(artifact, lambda d: put_file(d, "evals/extra.jsonl", b"{}\n"))
    _refused(fx, pr, fx.evaluate(pr, artifact), "evals/extra.jsonl is not a file of the head commit's LLM system")
    tamper(artifact, lambda d: put_file(d, "../../outside", b"x"))
    ran = fx.evaluate(pr, artifact)
    assert ran.rc == 2 and "'../../outside', which is not a path in the repository" in ran.stderr


def test_oversized_artifact_is_refused_before_it_is_read(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    artifact = fx.collect(pr)
    size = (artifact / "gating-collect.json").stat().st_size
    _refused(fx, pr, fx.evaluate(pr, artifact, "--max-artifact-bytes", "1000"),
             f"is {size} bytes, more than the 1000 allowed")


def test_artifact_claiming_another_pull_request_is_refused(fx: Forks):
    inside = fx.open_pr("inside", {"prompts/greet.md": greet_prompt("hi")})  # a same-repository pull request
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    artifact = fx.collect(pr)
    tamper(artifact, lambda d: d.update(pull_number=inside["number"]))
    _refused(fx, pr, fx.evaluate(pr, artifact), f"pull request #{inside['number']}'s head is {inside['head']['sha'][:12]}")


def test_a_failed_collect_run_still_reports_on_the_head(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    ran = fx.evaluate(pr, fx.tmp / "never-downloaded", workflow_run={"conclusion": "failure"})
    _refused(fx, pr, ran, "the collect run concluded `failure`")


# -- what a fork may never steer -------------------------------------------------------------------


def test_fork_changing_where_requests_go_is_not_evaluated(fx: Forks):
    manifest = fx.repo.git.show_file("main", "gating.yml").decode()
    evil = manifest.replace("params: {temperature: 0}}", "params: {temperature: 0}, base_url: 'http://127.0.0.1:9/v1'}")
    pr = fx.open_fork_pr({"gating.yml": evil, "prompts/answer.md": answer_prompt("no")})
    ran = fx.evaluate(pr, fx.collect(pr))
    assert ran.rc == 1 and ran.llm_requests == 0
    run = fx.eval_run(pr["head"]["sha"])
    assert run["conclusion"] == "failure"
    assert run["output"]["title"].startswith("Error: not evaluated: this pull request from a fork changes")
    assert "components.models.bot.base_url (None → 'http://127.0.0.1:9/v1')" in run["output"]["summary"]


COMMAND_YML = """\
version: 1
name: piped-bot
components:
  models:
    bot: {provider: openai, model: gpt-4o-2024-08-06}
  prompts:
    answer: {file: prompts/answer.md, model: bot}
evals:
  datasets: [evals/cases.jsonl]
  target: {type: command, run: "python3 pipeline.py", code: [pipeline.py]}
"""


def test_fork_changing_the_command_targets_code_is_not_run(github, llm, tmp_path: Path, monkeypatch):
    src = tmp_path / "piped"
    (src / "prompts").mkdir(parents=True)
    (src / "evals").mkdir()
    (src / "gating.yml").write_text(COMMAND_YML)
    (src / "prompts/answer.md").write_text(answer_prompt("yes"))
    (src / "evals/cases.jsonl").write_text(json.dumps({"id": "c1", "prompt": "answer", "vars": {"n": 1},
                                                       "assert": [{"type": "icontains", "value": "yes"}]}) + "\n")
    (src / "pipeline.py").write_text("import json, sys\nprint(json.dumps({'output': 'yes'}))\n")
    repo = github.create_repo("acme/piped-bot", source_dir=src)
    fx = Forks(github, repo, llm, tmp_path, monkeypatch)
    marker = tmp_path / "fork-code-ran"
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("sure"),
                          "pipeline.py": f"open({str(marker)!r}, 'w').write('pwned')\nprint('{{\"output\": \"yes\"}}')\n"})
    ran = fx.evaluate(pr, fx.collect(pr))
    assert ran.rc == 1 and not marker.exists()
    run = fx.eval_run(pr["head"]["sha"])
    assert run["conclusion"] == "failure"
    assert "pipeline.py: code the `command` target may run" in run["output"]["summary"]


# -- pull_request_target ---------------------------------------------------------------------------


def test_pull_request_target_refuses_a_forks_head_and_says_so_on_the_check(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    payload = fx.emu.webhook("pull_request", "opened", repo=fx.repo, number=pr["number"]).payload
    ran = fx.run_event("pull_request_target", payload, fx.repo.head("main"), token=fx.actions)
    assert ran.rc == 2 and ran.llm_requests == 0
    assert "not evaluated under `pull_request_target`" in ran.stderr and "gating-evaluate.yml" in ran.stderr
    run = fx.eval_run(pr["head"]["sha"])
    assert run["conclusion"] == "failure"
    assert run["output"]["title"].startswith("Error: a pull request from a fork is not evaluated under "
                                             "`pull_request_target`")
    assert "README, \"Pull requests from forks\"" in run["output"]["summary"]
    assert ran.outputs["verdict"] == "error" and "pull_request_target" in ran.summary


def test_pull_request_target_on_a_same_repository_pull_request_runs(fx: Forks):
    pr = fx.open_pr("inside", {"prompts/greet.md": greet_prompt("hello, friend")})
    payload = fx.emu.webhook("pull_request", "opened", repo=fx.repo, number=pr["number"]).payload
    ran = fx.run_event("pull_request_target", payload, fx.repo.head("main"), token=fx.actions)
    assert ran.rc == 0, ran.stderr
    assert fx.eval_run(pr["head"]["sha"])["conclusion"] == "success"


def test_workflow_run_without_an_artifact_refuses_a_forks_head(fx: Forks):
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no")})
    payload = fx.emu.webhook("workflow_run", "completed", repo=fx.repo, number=pr["number"]).payload
    ran = fx.run_event("workflow_run", payload, fx.repo.head("main"), token=fx.actions)
    assert ran.rc == 2 and "not evaluated under `workflow_run`" in ran.stderr
    assert fx.eval_run(pr["head"]["sha"])["conclusion"] == "failure"


PYTHON_YML = """\
version: 1
name: checked-bot
components:
  models:
    bot: {provider: openai, model: gpt-4o-2024-08-06}
  prompts:
    answer: {file: prompts/answer.md, model: bot}
evals:
  datasets: [evals/cases.jsonl]
  python: [evals/checks.py]
"""


def _python_repo(github, llm, tmp_path: Path, monkeypatch) -> Forks:
    src = tmp_path / "checked"
    (src / "prompts").mkdir(parents=True)
    (src / "evals").mkdir()
    (src / "gating.yml").write_text(PYTHON_YML)
    (src / "prompts/answer.md").write_text(answer_prompt("yes"))
    (src / "evals/cases.jsonl").write_text(json.dumps({"id": "c1", "prompt": "answer", "vars": {"n": 1},
                                                       "assert": [{"type": "python", "value": "file://evals/checks.py"}]})
                                           + "\n")
    (src / "evals/checks.py").write_text("def get_assert(output, context):\n    return 'yes' in output\n")
    repo = github.create_repo("acme/checked-bot", source_dir=src)
    return Forks(github, repo, llm, tmp_path, monkeypatch)


def test_a_forks_edit_to_a_python_check_never_runs_the_base_one_judges(github, llm, tmp_path: Path, monkeypatch):
    fx = _python_repo(github, llm, tmp_path, monkeypatch)
    marker = tmp_path / "fork-check-ran"
    pr = fx.open_fork_pr({"prompts/answer.md": answer_prompt("no"),
                          "evals/checks.py": f"def get_assert(output, context):\n    open({str(marker)!r}, 'w')"
                                             ".write('pwned')\n    return True\n"})
    ran = fx.evaluate(pr, fx.collect(pr))
    assert not marker.exists()
    assert ran.llm_requests > 0  # evaluated, and the base's check failed the head's "no" (the fork's passes all)
    assert "pass rate fell by 1 on 1 paired cases" in ran.stdout


def test_a_fork_adding_a_case_with_inline_python_is_not_evaluated(github, llm, tmp_path: Path, monkeypatch):
    fx = _python_repo(github, llm, tmp_path, monkeypatch)
    marker = tmp_path / "fork-inline-ran"
    base_cases = fx.repo.git.show_file("main", "evals/cases.jsonl").decode()
    added = json.dumps({"id": "c2", "prompt": "answer", "vars": {"n": 2},
                        "assert": [{"type": "python", "value": f"open({str(marker)!r}, 'w').write('x') or True"}]})
    pr = fx.open_fork_pr({"evals/cases.jsonl": base_cases + added + "\n"})
    ran = fx.evaluate(pr, fx.collect(pr))
    assert ran.rc == 1 and ran.llm_requests == 0 and not marker.exists()
    run = fx.eval_run(pr["head"]["sha"])
    assert run["output"]["title"].startswith("Error: not evaluated: this pull request from a fork changes")
    assert "case c2 added by this pull request run Python" in run["output"]["summary"]
