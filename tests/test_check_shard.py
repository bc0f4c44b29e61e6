"""`gating check --shard I/N` and `--merge DIR` end to end: real git over smart HTTP from the GitHub
emulator, answers replayed from cassettes recorded against the local test LLM server, and the merged
check compared byte for byte with the unsharded check of the same pull request.

Two runs can never share a wall clock, so these tests pin the two clocks a report shows (the runs'
start and finish times, the elapsed seconds); everything else is whatever the runs produced.
"""

from __future__ import annotations

import contextlib
import io
import json
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from check_support import GATING_YML, Harness, answer_prompt, greet_prompt, write_system

from gating.commands.cli import main
from gating.evals.runner import run_evals
from gating.git.notes import EVALS_REF
from gating.git.repository import Git
from gating.git.revision import WorkTree
from gating.system.snapshot import build_snapshot
from gating.testing.llm_server import LLMServer

REPLAY_YML = GATING_YML.replace("  target: {type: prompt}\n", "  target: {type: prompt}\n  mode: replay\n")
NOW = "2026-12-02T12:00:00.000Z"


@dataclass
class Out:
    rc: int
    stdout: str
    stderr: str
    work: Path
    clone: Git

    def file(self, name: str) -> str:
        p = self.work / name
        return p.read_text(encoding="utf-8") if p.exists() else ""


class Sharded:
    """The emulated repository and `gating check` runs as matrix jobs would make them."""

    def __init__(self, h: Harness):
        self.h = h
        self._n = 0

    def run(self, pr: dict[str, Any], clone: Git, *args: str, fork: bool = False,
            event_name: str = "pull_request") -> Out:
        h = self.h
        self._n += 1
        work = h.tmp / f"job-{self._n}"
        work.mkdir()
        event = work / "event.json"
        event.write_text(json.dumps(h.event(pr, fork=fork)), encoding="utf-8")
        for k in ("GATING_CACHE_DIR", "GATING_PROVIDER", "GH_TOKEN", "GITHUB_BASE_REF", "RUNNER_TEMP"):
            h.mp.delenv(k, raising=False)
        for k, v in h.env(pr["head"]["sha"], h.token, event, work, event_name).items():
            h.mp.setenv(k, v)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["-C", str(clone.root), "check", *(a.replace("WORK", str(work)) for a in args)])
        return Out(rc, out.getvalue(), err.getvalue(), work, clone)

    def unsharded(self, pr: dict[str, Any], *args: str, **kw: Any) -> Out:
        return self.run(pr, self.h.clone(), "--json", "WORK/report.json", "--junit", "WORK/junit.xml", *args,
                        **kw)

    def shards(self, pr: dict[str, Any], n: int, into: Path, *args: str, **kw: Any) -> list[Out]:
        clone = self.h.clone()  # a shard writes no notes: the matrix jobs may as well share a checkout
        into.mkdir(parents=True, exist_ok=True)
        return [self.run(pr, clone, "--shard", f"{i}/{n}", "--shard-out", str(into / f"shard-{i}-of-{n}.json"),
                         *args, **kw) for i in range(1, n + 1)]

    def merge(self, pr: dict[str, Any], into: Path, *args: str, **kw: Any) -> Out:
        return self.run(pr, self.h.clone(), "--merge", str(into), "--json", "WORK/report.json", "--junit",
                        "WORK/junit.xml", *args, **kw)


def _record(llm: LLMServer, root: Path) -> None:
    reader = WorkTree(root)
    run_evals(build_snapshot(reader), reader, env={**llm.env(), "GATING_PROVIDER": "live"}, record=True)


@pytest.fixture
def sh(github, tmp_path: Path, monkeypatch) -> Sharded:
    """acme/tiny-bot in replay mode, its cassettes holding the answers of the base's prompts and of the
    pull requests' (so every run answers the same way), and the clocks pinned."""
    src = write_system(tmp_path / "src")
    (src / "gating.yml").write_text(REPLAY_YML, encoding="utf-8")
    with LLMServer() as llm:
        _record(llm, src)
        for answer, greet in (("no", "hello there"), ("yes", "hello and welcome")):
            (src / "prompts/answer.md").write_text(answer_prompt(answer), encoding="utf-8")
            (src / "prompts/greet.md").write_text(greet_prompt(greet), encoding="utf-8")
            _record(llm, src)
        write_system(src)
        (src / "gating.yml").write_text(REPLAY_YML, encoding="utf-8")
        repo = github.create_repo("acme/tiny-bot", source_dir=src)
        monkeypatch.setattr("gating.evals.runner._now", lambda: NOW)
        monkeypatch.setattr("gating.check.run.time", types.SimpleNamespace(monotonic=lambda: 0.0))
        yield Sharded(Harness(github, repo, llm, tmp_path, monkeypatch))


def _same(a: Out, b: Out) -> None:
    assert (a.rc, a.stdout) == (b.rc, b.stdout)
    assert a.file("report.json") == b.file("report.json")
    assert a.file("junit.xml") == b.file("junit.xml")
    assert a.file("step-summary.md") == b.file("step-summary.md")
    outputs = [o.file("output.txt").replace(str(o.work), "WORK") for o in (a, b)]
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(("change", "verdict"), [
    ({"prompts/answer.md": answer_prompt("no")}, "fail"),  # 10 cases flip: McNemar, regressions, annotations
    ({"prompts/greet.md": greet_prompt("hello and welcome")}, "pass"),  # 2 head cases: a shard of 3 runs none
], ids=["regression", "two-affected-cases"])
def test_merged_shards_make_the_unsharded_report_byte_for_byte(sh: Sharded, change: dict[str, str], verdict: str):
    pr = sh.h.open_pr("change", change, "Change a prompt")
    head, args = pr["head"]["sha"], ("--no-post", "--notes", "local")
    whole = sh.unsharded(pr, *args)
    assert json.loads(whole.file("report.json"))["verdict"] == verdict, whole.stderr
    base = json.loads(whole.file("report.json"))["base"]
    for n in (1, 2, 3):
        into = sh.h.tmp / f"shards-{n}"
        jobs = sh.shards(pr, n, into)
        for i, job in enumerate(jobs, 1):
            assert job.rc == 0, job.stderr
            assert job.stdout.startswith(f"gating / eval: shard {i}/{n}: evaluated ")
            assert f"wrote {into / f'shard-{i}-of-{n}.json'}" in job.stdout
            assert job.file("step-summary.md").startswith(f"## gating / eval: shard {i}/{n}\n")
        parts = [json.loads((into / f"shard-{i}-of-{n}.json").read_text()) for i in range(1, n + 1)]
        heads = [len(p["runs"]["head"]["run"]["cases"]) for p in parts]
        bases = [len(p["runs"]["base"]["run"]["cases"]) for p in parts]
        assert (sum(bases), sum(heads)) == (12, 10 if verdict == "fail" else 2)
        if n == 3 and verdict == "pass":
            assert 0 in heads  # a shard that ran no head case
        merged = sh.merge(pr, into, *args)
        _same(whole, merged)
        assert json.loads(merged.file("report.json"))["notes"]["commits"] == sorted([base, head])
        for commit in (base, head):  # the eval notes the merge stores are the unsharded run's
            assert merged.clone.notes_show(EVALS_REF, commit) == whole.clone.notes_show(EVALS_REF, commit) != None
