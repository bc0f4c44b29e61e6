"""Python assertions and output transforms: declared files or inline code, run in a child process with limits,
always the judging revision's version, and part of the snapshot and the diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eval_support import a, fast_retries, llm, load, write_repo  # noqa: F401

from gating.diff.semantic import diff_snapshots
from gating.evals.dataset import DatasetError
from gating.evals.judging import judging_for, self_judging
from gating.evals.runner import run_evals
from gating.testing.llm_server import LLMServer

CHECKS = '''\
import json


def get_assert(output, context):
    return "refund" in output.lower()


def length_score(output, context):
    return min(1.0, len(output) / 20)


def verdict(output, context):
    ok = context["vars"]["want"] in output
    return {"pass": ok, "score": 0.9 if ok else 0.1, "reason": "wanted " + context["vars"]["want"]}


def boom(output, context):
    raise KeyError("no such field")


def spin(output, context):
    while True:
        pass


def wrong(output, context):
    return "yes"


def upper(output, context):
    return output.upper()


def parse(output, context):
    return json.loads(output)["answer"]


def leak(output, context):
    import os
    return os.environ.get("SECRET_FOR_TEST") is None and os.environ.get("OPENAI_API_KEY") is None
'''


def repo(tmp_path: Path, cases: list[dict[str, Any]], evals: dict[str, Any] | None = None,
         checks: str = CHECKS) -> Path:
    return write_repo(tmp_path, cases, files={"evals/checks.py": checks},
                      evals={"python": ["evals/checks.py"], **(evals or {})})


def run(root: Path, server: LLMServer) -> dict[str, Any]:
    snap, reader = load(root)
    got = run_evals(snap, reader, env=server.env(), cache_dir=None, retry=fast_retries())
    return {c.id: c for c in got.cases}


def case(cid: str, answer: str, *asserts: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"id": cid, "prompt": "p", "vars": {"q": a(answer), **more.pop("vars", {})}, "assert": list(asserts),
            **more}


def py(value: str, **more: Any) -> dict[str, Any]:
    return {"type": "python", "value": value, **more}


def test_file_checks_pass_fail_and_negate(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    got = run(repo(tmp_path, [
        case("pass", "Your refund is on its way", py("file://evals/checks.py")),
        case("fail", "No idea", py("file://evals/checks.py:get_assert")),
        case("not", "No idea", {"type": "not-python", "value": "file://evals/checks.py"}),
        case("not-fails", "refund", {"type": "not-python", "value": "file://evals/checks.py"}),
    ]), llm)
    assert [got[c].passed for c in ("pass", "fail", "not", "not-fails")] == [True, False, True, False]
    assert got["fail"].error is None and got["fail"].assertions[0].reason == "returned False"
    assert got["not"].assertions[0].reason == "returned False (negated)"


def test_scores_thresholds_and_reasons(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    got = run(repo(tmp_path, [
        case("long", "twenty characters or more", py("file://evals/checks.py:length_score", threshold=0.8)),
        case("short", "tiny", py("file://evals/checks.py:length_score", threshold=0.8, name="length")),
        case("dict-ok", "the order ORD-1", py("file://evals/checks.py:verdict"), vars={"want": "ORD-1"}),
        case("dict-bad", "the order", py("file://evals/checks.py:verdict"), vars={"want": "ORD-1"}),
    ]), llm)
    assert got["long"].passed and got["long"].score == 1.0
    assert not got["short"].passed and got["short"].scores == {"length": 0.2}
    assert got["short"].assertions[0].reason == "score 0.2 (threshold 0.8)"
    assert got["dict-ok"].passed and got["dict-ok"].score == 0.9
    assert (got["dict-bad"].passed, got["dict-bad"].score) == (False, 0.1)
    assert got["dict-bad"].assertions[0].reason == "wanted ORD-1"


def test_inline_expressions_and_bodies(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    got = run(repo(tmp_path, [
        case("expr", "Hello Ann", py("output.startswith('Hello') and vars['name'] in output"), vars={"name": "Ann"}),
        case("body", "a b c", py("words = output.split()\nreturn len(words) / 3")),
        case("expr-fails", "Bye", py("output.startswith('Hello')")),
    ]), llm)
    assert got["expr"].passed and got["body"].passed and got["body"].score == 1.0
    assert not got["expr-fails"].passed and got["expr-fails"].error is None


@pytest.mark.parametrize(("fn", "says"), [
    ("boom", "evals/checks.py:boom raised KeyError: 'no such field' (evals/checks.py:18)"),
    ("wrong", "a check returns true/false, a number or {pass, score, reason}, not str"),
], ids=["raises", "wrong-shape"])
def test_a_check_without_a_verdict_is_a_case_error_not_a_score(tmp_path: Path, llm: LLMServer,  # noqa: F811
                                                             fn: str, says: str) -> None:
    got = run(repo(tmp_path, [case("c", "refund", py(f"file://evals/checks.py:{fn}")),
                              case("ok", "refund", py("file://evals/checks.py"))]), llm)
    assert (got["c"].passed, got["c"].error) == (False, "assertion")
    assert says in got["c"].error_message
    assert got["ok"].passed  # the other cases are untouched


def test_a_check_that_never_returns_is_stopped_and_the_run_goes_on(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    got = run(repo(tmp_path, [case("spin", "x", py("file://evals/checks.py:spin")),
                              case("after", "refund", py("file://evals/checks.py"))],
                   evals={"python_timeout_s": 1, "concurrency": 1}), llm)
    assert got["spin"].error == "assertion"
    assert "evals/checks.py:spin did not return within 1 s" in got["spin"].error_message
    assert got["after"].passed


def test_checks_see_no_provider_keys(tmp_path: Path, llm: LLMServer, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("SECRET_FOR_TEST", "s3cret")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live")
    got = run(repo(tmp_path, [case("c", "x", py("file://evals/checks.py:leak"))]), llm)
    assert got["c"].passed, got["c"].assertions


def test_transforms_run_before_the_assertions(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [
        case("default", "refund due", {"type": "contains", "value": "REFUND"}),
        case("own", '{"answer": "42"}', {"type": "equals", "value": "42"}, transform="file://evals/checks.py:parse"),
        case("inline", "abc", {"type": "equals", "value": "abcabc"}, transform="output * 2"),
        case("broken", "not json", {"type": "equals", "value": "x"}, transform="file://evals/checks.py:parse"),
    ]
    got = run(repo(tmp_path, cases, evals={"transform": "file://evals/checks.py:upper"}), llm)
    assert got["default"].passed and got["default"].output == "REFUND DUE"
    assert got["own"].passed and got["inline"].passed
    assert got["broken"].error == "assertion"
    assert got["broken"].error_message.startswith("transform: evals/checks.py:parse raised JSONDecodeError")


def test_an_undeclared_or_missing_check_is_refused_before_anything_runs(tmp_path: Path,
                                                                      llm: LLMServer) -> None:  # noqa: F811
    root = repo(tmp_path, [case("c", "x", py("file://evals/other.py:f")), case("d", "x", py("file://evals/checks.py:nope"))])
    (root / "evals/other.py").write_text("def f(o, c):\n    return True\n")
    with pytest.raises(DatasetError) as e:
        run(root, llm)
    assert "evals/cases.jsonl:1: case 'c': python: evals/other.py is not a declared Python file of the evals: add " \
           "it to `evals.python`" in str(e.value)
    assert "evals/cases.jsonl:2: case 'd': python: evals/checks.py defines no function 'nope'" in str(e.value)
    assert llm.requests == 0


@pytest.mark.parametrize(("spec", "says"), [
    (py("file://../outside.py:f"), "'../outside.py' must be a path inside the repository"),
    (py("file://evals/checks.py:1bad"), "is not file://PATH.py or file://PATH.py:FUNCTION"),
    (py("output ==="), "inline python does not compile"),
    (py(""), "python needs a `value`"),
    (py("True", threshold="high"), "`threshold` must be a number"),
], ids=["outside", "bad-name", "syntax", "empty", "threshold"])
def test_bad_python_specs_are_dataset_errors(tmp_path: Path, llm: LLMServer, spec: dict, says: str) -> None:  # noqa: F811
    with pytest.raises(DatasetError, match="evals/cases.jsonl:1") as e:
        run(repo(tmp_path, [case("c", "x", spec)]), llm)
    assert says in str(e.value)


def test_checks_are_system_files_in_the_snapshot_and_the_diff(tmp_path: Path) -> None:
    base = repo(tmp_path / "base", [case("c", "x", py("file://evals/checks.py"))])
    head = repo(tmp_path / "head", [case("c", "x", py("file://evals/checks.py"))],
                checks=CHECKS.replace('"refund" in', '"money" in'))
    bsnap, hsnap = load(base)[0], load(head)[0]
    assert "evals/checks.py" in bsnap.files and bsnap.data["python"] == {"evals/checks.py": bsnap.files["evals/checks.py"]}
    [change] = [c for c in diff_snapshots(bsnap, hsnap).changes if c.path == "python.evals/checks.py"]
    assert change.category == "evals" and change.kind == "changed"
    assert change.summary.startswith("eval Python (assertions, transforms) evals/checks.py changed: +1 −1 lines; "
                                     "the base's version judges this pull request")


def test_the_base_version_of_a_check_judges_the_head(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [case("c", "refund", py("file://evals/checks.py")),
             case("new", "refund", py("file://evals/checks.py:added"))]
    base = repo(tmp_path / "base", cases[:1])
    marker = tmp_path / "head-code-ran"
    evil = CHECKS + f"\n\ndef added(output, context):\n    open({str(marker)!r}, 'w').write('x')\n    return True\n"
    head = repo(tmp_path / "head", cases, checks=evil.replace("return \"refund\" in output.lower()",
                                                              f"open({str(marker)!r}, 'w').write('x')\n    return False"))
    bsnap, breader = load(base)
    hsnap, hreader = load(head)
    judging = judging_for(self_judging(bsnap, "base", breader), bsnap, hsnap, "base", hreader)
    assert judging is not None and judging.added == ("new",)
    got = {c.id: c for c in run_evals(hsnap, hreader, env=llm.env(), cache_dir=None, judging=judging).cases}
    assert got["c"].passed  # the base's get_assert, not the head's
    assert got["new"].error == "assertion"
    assert "defines no function 'added'" in got["new"].error_message
    assert not marker.exists()


SIBLING_CHECKS = '''\
from helpers import wants_refund
import lib.words as words
from lib import STOP


def get_assert(output, context):
    return wants_refund(output) and words.count(output) < STOP
'''
HELPERS = '''\
def wants_refund(text):
    return "refund" in text.lower()
'''


def sibling_repo(root: Path, cases: list[dict[str, Any]], helpers: str = HELPERS) -> Path:
    files = {"evals/checks.py": SIBLING_CHECKS, "evals/helpers.py": helpers, "evals/lib/__init__.py": "STOP = 50\n",
             "evals/lib/words.py": "def count(text):\n    return len(text.split())\n"}
    return write_repo(root, cases, files=files, evals={
        "python": ["evals/checks.py", "evals/helpers.py", "evals/lib/__init__.py", "evals/lib/words.py"]})


def test_a_check_imports_its_sibling_modules_and_packages(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    got = run(sibling_repo(tmp_path, [case("yes", "a refund", py("file://evals/checks.py")),
                                      case("no", "a coupon", py("file://evals/checks.py"))]), llm)
    assert got["yes"].passed and got["yes"].error is None
    assert not got["no"].passed and got["no"].error is None


def test_a_sibling_must_be_declared_and_the_working_tree_is_never_imported(tmp_path: Path,
                                                                          llm: LLMServer) -> None:  # noqa: F811
    root = write_repo(tmp_path, [case("c", "a refund", py("file://evals/checks.py"))],
                      files={"evals/checks.py": SIBLING_CHECKS, "evals/helpers.py": HELPERS},
                      evals={"python": ["evals/checks.py"]})
    got = run(root, llm)["c"]
    assert got.error == "assertion"
    assert got.error_message.startswith("evals/checks.py:get_assert raised ModuleNotFoundError: No module named "
                                        "'helpers' (evals/checks.py:1); a module the checks import must be a file of "
                                        "`evals.python`")


def test_a_sibling_is_a_system_file_and_the_base_version_judges(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    cases = [case("c", "a refund", py("file://evals/checks.py"))]
    base = sibling_repo(tmp_path / "base", cases)
    marker = tmp_path / "head-helper-ran"
    head = sibling_repo(tmp_path / "head", cases, helpers=f"def wants_refund(text):\n    open({str(marker)!r}, 'w')"
                                                          ".write('x')\n    return False\n")
    bsnap, breader = load(base)
    hsnap, hreader = load(head)
    [change] = [c for c in diff_snapshots(bsnap, hsnap).changes if c.path == "python.evals/helpers.py"]
    assert change.summary.startswith("eval Python (assertions, transforms) evals/helpers.py changed")
    judging = judging_for(self_judging(bsnap, "base", breader), bsnap, hsnap, "base", hreader)
    assert judging is not None
    got = run_evals(hsnap, hreader, env=llm.env(), cache_dir=None, judging=judging).cases[0]
    assert got.passed  # the base's helper, not the head's
    assert not marker.exists()
    assert not run(head, llm)["c"].passed and marker.exists()  # the head's own run uses its own helper


def test_a_generator_imports_its_siblings(tmp_path: Path, llm: LLMServer) -> None:  # noqa: F811
    gen = "from helpers import ANSWERS\n\n\ndef cases():\n    return [{'id': f'g{i}', 'prompt': 'p', 'vars': {'q': q}}" \
          " for i, q in enumerate(ANSWERS)]\n"
    from eval_support import a as ans

    root = write_repo(tmp_path, [], files={"evals/gen.py": gen,
                                           "evals/helpers.py": f"ANSWERS = [{ans('one')!r}, {ans('two')!r}]\n"},
                      evals={"python": ["evals/gen.py", "evals/helpers.py"], "generate": ["file://evals/gen.py:cases"]})
    assert sorted(run(root, llm)) == ["g0", "g1"]
