"""`gating import promptfoo`: prompts, providers, tests and the assertions gating has are converted; the
rest is listed by kind with a count, and the converted files pass gating's own parsers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from eval_support import llm  # noqa: F401

from gating.adopt.promptfoo_assertions import PROMPTFOO_ASSERTIONS, convert_assertion
from gating.commands.cli import main
from gating.evals.assertions import ALL_TYPES, check_spec
from gating.git.repository import Git, commit_all, init_repo
from gating.testing.llm_server import LLMServer

CONFIG = """\
description: Support bot
prompts:
  - file://prompts/answer.txt
  - id: file://prompts/chat.json
    label: chat
  - "Translate to French: {{question}}"
providers:
  - openai:gpt-4o
  - id: anthropic:messages:claude-3-5-haiku-20241022
    label: haiku
    config: {temperature: 0, max_tokens: 300, response_format: json}
  - exec: python run.py
  - id: file://provider.py
defaultTest:
  assert:
    - type: latency
      threshold: 5000
tests:
  - description: Refund window
    vars: {question: "[[answer: You have 30 days to return it.]]"}
    assert:
      - type: icontains
        value: 30 days
      - type: equals
        value: You have 30 days to return it.
      - type: contains
        value: "{{question}}"
      - type: not-contains
        value: password
      - type: regex
        value: "\\\\d+ days"
      - type: javascript
        value: output.length < 500
      - type: llm-rubric
        value: Answers politely
        threshold: 0.8
      - type: cost
        threshold: 0.01
  - description: JSON answers
    vars: {question: "[[answer: {\\"ok\\": true}]]"}
    assert:
      - type: is-json
      - type: is-json
        value: {type: object, required: [ok]}
      - type: javascript
        value: JSON.parse(output).ok
      - type: similar
        value: ok
      - type: contains-any
        value: "ok, fine"
  - vars: {question: [a, b]}
  - file://more_tests.csv
"""


@pytest.fixture
def repo(tmp_path: Path) -> Git:
    g = init_repo(tmp_path / "pf")
    files = {"promptfooconfig.yaml": CONFIG, "prompts/answer.txt": "Answer: {{question}}\n",
             "prompts/chat.json": json.dumps([{"role": "system", "content": "Be brief."},
                                              {"role": "user", "content": "{{question}}"}])}
    for path, text in files.items():
        (g.root / path).parent.mkdir(parents=True, exist_ok=True)
        (g.root / path).write_text(text, encoding="utf-8")
    commit_all(g, "promptfoo evals")
    return g


def test_import_converts_what_gating_supports_and_lists_the_rest(repo: Git, capsys: pytest.CaptureFixture) -> None:
    rc = main(["-C", str(repo.root), "import", "promptfoo", "promptfooconfig.yaml"])
    out = capsys.readouterr().out
    assert rc == 0
    # 3 prompts x 2 convertible providers = 6 prompt components; 2 tests, and one with a list var (2 runs), on all 6
    assert out.startswith("Converted promptfooconfig.yaml: 24 cases.\n")
    assert "Wrote:\n  prompts/chat.yml\n  prompts/prompt-3.md\n  gating.yml\n  evals/promptfoo.jsonl\n" in out
    for line in ("2 x assertion type `javascript`",
                 "1 x provider `exec:python run.py`", "1 x provider `file://provider.py`",
                 "1 x provider config key `response_format`",
                 "1 x tests from a file that is not in the repository or not CSV/YAML/JSON"):
        assert f"\n  {line}\n" in out, line
    assert "Not converted (6): " in out
    assert "evals:\n  datasets:" in (repo.root / "gating.yml").read_text()
    assert "  embedding: embedding\n" in (repo.root / "gating.yml").read_text()
    assert "| `gpt-4o` | openai | `gpt-4o-2024-08-06` |" in out

    manifest = (repo.root / "gating.yml").read_text()
    assert "name: Support-bot\n" in manifest and "judge: gpt-4o\n" in manifest
    assert "    haiku:\n      provider: anthropic\n      model: claude-3-5-haiku-20241022\n      params:\n" \
           "        temperature: 0\n        max_tokens: 300\n" in manifest
    assert "    answer-haiku:\n      file: prompts/answer.txt\n      model: haiku\n" in manifest
    assert (repo.root / "prompts/chat.yml").read_text() == "- role: system\n  content: Be brief.\n" \
                                                           "- role: user\n  content: '{{question}}'\n"
    cases = [json.loads(line) for line in (repo.root / "evals/promptfoo.jsonl").read_text().splitlines()]
    assert [c["id"] for c in cases[:2]] == ["refund-window-answer-gpt-4o", "refund-window-answer-haiku"]
    first = cases[0]
    assert first["description"] == "Refund window"
    assert "  defaults:\n    assert:\n    - type: latency\n      value: 5000\n" in manifest  # defaultTest
    assert first["assert"] == [
        {"type": "icontains", "value": "30 days"},
        {"type": "equals", "value": "You have 30 days to return it."},
        {"type": "contains", "value": "{{question}}"},  # gating fills it from the case's vars
        {"type": "not-contains", "value": "password"},
        {"type": "regex", "value": "\\d+ days"},
        {"type": "rubric", "threshold": 0.8, "value": "Answers politely"},
        {"type": "cost", "value": 0.01},
    ]
    json_case = next(c for c in cases if c["id"].startswith("json-answers"))
    assert json_case["assert"] == [{"type": "is-json"}, {"type": "json-schema",
                                                             "value": {"type": "object", "required": ["ok"]}},
                                       {"type": "similar", "value": "ok"}, {"type": "contains-any", "value": ["ok", "fine"]}]
    assert main(["-C", str(repo.root), "snapshot", "--digest"]) == 0


def test_the_converted_evals_run(repo: Git, llm: LLMServer, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                 tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["-C", str(repo.root), "import", "promptfoo", str(repo.root / "promptfooconfig.yaml")]) == 0
    capsys.readouterr()
    for k, v in {**llm.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "c")}.items():
        monkeypatch.setenv(k, v)
    main(["-C", str(repo.root), "eval", "--json", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    cases = {c["id"]: c for c in report["head"]["cases"]}
    assert len(cases) == 24
    refund = cases["refund-window-answer-gpt-4o"]
    results = {a["type"]: a["passed"] for a in refund["assertions"]}
    assert {t: results[t] for t in ("latency", "icontains", "equals", "contains", "not-contains", "regex")} == {
        "latency": True, "icontains": True, "equals": True, "contains": False, "not-contains": True, "regex": True}
    json_case = cases["json-answers-answer-gpt-4o"]
    assert [(a["type"], a["passed"]) for a in json_case["assertions"]][1:] == [
        ("is-json", True), ("json-schema", True), ("similar", False), ("contains-any", True)]


def test_a_second_import_refuses_to_overwrite_and_force_replaces(repo: Git, capsys: pytest.CaptureFixture) -> None:
    assert main(["-C", str(repo.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 0
    (repo.root / "gating.yml").write_text("# mine\n")
    capsys.readouterr()
    assert main(["-C", str(repo.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == ("gating: error: prompts/chat.yml, prompts/prompt-3.md, gating.yml, evals/promptfoo.jsonl exist; "
                   "nothing was written (--force replaces them with the converted files)\n")
    assert (repo.root / "gating.yml").read_text() == "# mine\n"
    assert main(["-C", str(repo.root), "import", "promptfoo", "promptfooconfig.yaml", "--force"]) == 0
    assert (repo.root / "gating.yml").read_text().startswith("# Converted from promptfooconfig.yaml")


@pytest.mark.parametrize(("config", "message"), [
    ("prompts: [\n", "gating: error: promptfooconfig.yaml: not valid YAML: "),
    ("\udcff", "gating: error: promptfooconfig.yaml: not UTF-8 text"),
    (None, "gating: error: "),
], ids=["bad-yaml", "not-utf8", "missing"])
def test_a_config_that_cannot_be_read_is_named(repo: Git, config: str | None, message: str,
                                               capsys: pytest.CaptureFixture) -> None:
    path = repo.root / "promptfooconfig.yaml"
    if config is None:
        path.unlink()
    else:
        path.write_bytes(config.encode("utf-8", "surrogateescape"))
    assert main(["-C", str(repo.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "promptfooconfig.yaml" in err
    assert not (repo.root / "gating.yml").exists()


def test_every_row_of_the_mapping_table_makes_an_assertion_gating_accepts() -> None:
    samples = {"latency": {"threshold": 100}, "cost": {"threshold": 0.5}, "is-json": {}, "is-refusal": {},
               "contains-json": {}, "python": {"value": "output != ''"}, "context-faithfulness": {},
               "answer-relevance": {},
               "llm-rubric": {"value": "polite", "threshold": 0.5}, "factuality": {"value": "Paris"}}
    for ptype, rule in PROMPTFOO_ASSERTIONS.items():
        assert rule.type in ALL_TYPES, ptype
        for t in (ptype, f"not-{ptype}"):
            spec, why = convert_assertion({"type": t, **samples.get(ptype, {"value": "x"})})
            assert spec is not None and why == "", t
            assert check_spec(spec, {}) is None, (t, spec)
    assert convert_assertion({"type": "starts-with", "value": "a.b"})[0] == {"type": "starts-with", "value": "a.b"}
    assert convert_assertion({"type": "contains", "value": "x", "transform": "output.trim()"}) == (
        None, "assertion `contains` with `transform`")


FEATURES = """\
description: Checked bot
prompts:
  - "{{greeting}} {{question}}"
providers:
  - openai:gpt-4o-2024-08-06
  - id: vertex:gemini-2.0-flash-001
    config: {projectId: acme, region: europe-west4}
  - id: bedrock:anthropic.claude-3-5-haiku-20241022-v1:0
    config: {region: eu-west-1}
  - id: azure:chat:gpt-4o-2024-08-06
    config: {apiHost: acme.openai.azure.com, apiVersion: "2024-10-21"}
defaultTest:
  vars: {greeting: ""}
  options: {transform: "file://checks/transforms.py:strip_it"}
  assert:
    - type: python
      value: file://checks/asserts.py
tests:
  - description: short refund
    vars: {question: "[[answer: Refund in 30 days]]"}
    threshold: 0.5
    assert:
      - type: python
        value: "len(output) < 40"
      - type: python
        value: file://checks/asserts.py:mentions
        config: {word: days}
      - type: icontains
        value: never
  - description: from a file
    vars: {question: "file://docs/q.txt"}
  - file://tests.csv
  - file://more.yaml
"""

FEATURE_FILES = {
    "checks/asserts.py": "def get_assert(output, context):\n    return 'refund' in output.lower()\n\n\n"
                         "def mentions(output, context):\n    return context['config']['word'] in output\n",
    "checks/transforms.py": "def strip_it(output, context):\n    return output.strip()\n",
    "docs/q.txt": "[[answer: no refund here]]",
    "tests.csv": "question,__expected\n[[answer: Refund soon]],contains: soon\n[[answer: nope]],contains: soon\n",
    "more.yaml": "- description: yaml test\n  vars: {question: ['[[answer: refund a]]', '[[answer: refund b]]']}\n",
}


def test_import_converts_python_checks_defaults_files_csv_and_native_providers(
        tmp_path: Path, llm: LLMServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    g = init_repo(tmp_path / "pf2")
    for path, text in {"promptfooconfig.yaml": FEATURES, **FEATURE_FILES}.items():
        (g.root / path).parent.mkdir(parents=True, exist_ok=True)
        (g.root / path).write_text(text, encoding="utf-8")
    commit_all(g, "promptfoo evals")
    assert main(["-C", str(g.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 0
    out = capsys.readouterr().out
    assert "Not converted" not in out, out
    manifest = (g.root / "gating.yml").read_text()
    for part in ("provider: vertex\n      model: gemini-2.0-flash-001\n      project: acme\n      location: europe-west4\n",
                 "provider: bedrock\n      model: anthropic.claude-3-5-haiku-20241022-v1:0\n      region: eu-west-1\n",
                 "base_url: https://acme.openai.azure.com\n      api_version: '2024-10-21'\n",
                 "  python:\n  - checks/asserts.py\n  - checks/transforms.py\n", "  files:\n  - docs/q.txt\n",
                 "    transform: file://checks/transforms.py:strip_it\n",
                 "    - type: python\n      value: file://checks/asserts.py:get_assert\n"):
        assert part in manifest, part
    cases = [json.loads(line) for line in (g.root / "evals/promptfoo.jsonl").read_text().splitlines()]
    first = cases[0]
    assert first["threshold"] == 0.5 and first["assert"][1] == {
        "type": "python", "value": "file://checks/asserts.py:mentions", "config": {"word": "days"}}
    assert {c["vars"]["question"] for c in cases} == {
        "[[answer: Refund in 30 days]]", "file://docs/q.txt", "[[answer: Refund soon]]", "[[answer: nope]]",
        "[[answer: refund a]]", "[[answer: refund b]]"}

    # run the converted evals on the openai pairing and compare each verdict with promptfoo's semantics
    for k, v in {**llm.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "c")}.items():
        monkeypatch.setenv(k, v)
    main(["-C", str(g.root), "eval", "--json", str(tmp_path / "r.json"), "--only", "prompt-1-gpt-4o-2024-08-06"])
    report = json.loads((tmp_path / "r.json").read_text())
    verdicts = {c["id"].removesuffix("-prompt-1-gpt-4o-2024-08-06"): c["passed"] for c in report["head"]["cases"]
                if c["id"].endswith("-prompt-1-gpt-4o-2024-08-06")}
    assert verdicts == {
        "short-refund": True,  # 3 of 4 assertions pass: 0.75 >= the test's threshold 0.5
        "from-a-file": True,   # the file's text is the question; its answer mentions a refund
        "case-3": True,        # CSV row: contains "soon", and the default python check
        "case-4": False,       # CSV row without "soon" or a refund
        "yaml-test-1": True, "yaml-test-2": True,  # a list var runs once per value
    }, verdicts


# -- every supported assertion type: imported and native verdicts, case by case ---------------------------

# (test name, the model's answer, promptfoo assertion, the same check written natively, the verdict promptfoo
# gives, extra vars). The judge below gives 5 when GOOD is in what it grades, else 1.
PARITY: list[tuple[str, str, dict, dict, bool, dict]] = [
    ("equals pass", "Paris", {"type": "equals", "value": "Paris"}, {"type": "equals", "value": "Paris"}, True, {}),
    ("equals fail", "Lyon", {"type": "equals", "value": "Paris"}, {"type": "equals", "value": "Paris"}, False, {}),
    ("contains pass", "in Paris", {"type": "contains", "value": "Paris"}, {"type": "contains", "value": "Paris"}, True, {}),
    ("contains fail", "in paris", {"type": "contains", "value": "Paris"}, {"type": "contains", "value": "Paris"},
     False, {}),
    ("not contains", "in Lyon", {"type": "not-contains", "value": "Paris"}, {"type": "not-contains", "value": "Paris"},
     True, {}),
    ("icontains pass", "in paris", {"type": "icontains", "value": "PARIS"}, {"type": "icontains", "value": "PARIS"},
     True, {}),
    ("not icontains fail", "in paris", {"type": "not-icontains", "value": "PARIS"},
     {"type": "not-icontains", "value": "PARIS"}, False, {}),
    ("contains any", "a refund", {"type": "contains-any", "value": "refund, return"},
     {"type": "contains-any", "value": ["refund", "return"]}, True, {}),
    ("contains all fail", "a refund", {"type": "contains-all", "value": "refund, return"},
     {"type": "contains-all", "value": ["refund", "return"]}, False, {}),
    ("icontains any", "A REFUND", {"type": "icontains-any", "value": ["refund", "x"]},
     {"type": "icontains-any", "value": ["refund", "x"]}, True, {}),
    ("icontains all", "A Refund, a Return", {"type": "icontains-all", "value": ["refund", "return"]},
     {"type": "icontains-all", "value": ["refund", "return"]}, True, {}),
    ("starts with", "Dear customer, hi", {"type": "starts-with", "value": "Dear customer"},
     {"type": "starts-with", "value": "Dear customer"}, True, {}),
    ("starts with fail", "Hi, dear customer", {"type": "starts-with", "value": "Dear customer"},
     {"type": "starts-with", "value": "Dear customer"}, False, {}),
    ("regex", "ORD-123456", {"type": "regex", "value": "ORD-\\d{6}"}, {"type": "regex", "value": "ORD-\\d{6}"}, True, {}),
    ("not regex fail", "ORD-123456", {"type": "not-regex", "value": "ORD-\\d{6}"},
     {"type": "not-regex", "value": "ORD-\\d{6}"}, False, {}),
    ("is json", '{"a": 1}', {"type": "is-json"}, {"type": "is-json"}, True, {}),
    ("is json fail", "not json", {"type": "is-json"}, {"type": "is-json"}, False, {}),
    ("is json schema fail", '{"a": 1}', {"type": "is-json", "value": {"type": "object", "required": ["b"]}},
     {"type": "json-schema", "value": {"type": "object", "required": ["b"]}}, False, {}),
    ("contains json", 'Here: {"a": 1} ok', {"type": "contains-json"}, {"type": "contains-json"}, True, {}),
    ("contains json fail", "no json here", {"type": "contains-json"}, {"type": "contains-json"}, False, {}),
    ("levenshtein", "Your order shipped", {"type": "levenshtein", "value": "Your order shipped.", "threshold": 2},
     {"type": "levenshtein", "value": "Your order shipped.", "threshold": 2}, True, {}),
    ("levenshtein fail", "Shipped", {"type": "levenshtein", "value": "Your order shipped.", "threshold": 2},
     {"type": "levenshtein", "value": "Your order shipped.", "threshold": 2}, False, {}),
    ("rouge n", "refunds take 30 days", {"type": "rouge-n", "value": "refunds take 30 days", "threshold": 0.6},
     {"type": "rouge-n", "value": "refunds take 30 days", "threshold": 0.6}, True, {}),
    ("rouge n fail", "no idea", {"type": "rouge-n", "value": "refunds take 30 days", "threshold": 0.6},
     {"type": "rouge-n", "value": "refunds take 30 days", "threshold": 0.6}, False, {}),
    ("similar", "You can return it within 30 days.", {"type": "similar", "value": "You can return it within 30 days.",
                                                      "threshold": 0.9},
     {"type": "similar", "value": "You can return it within 30 days.", "threshold": 0.9}, True, {}),
    ("is refusal", "I'm sorry, I can't help with that.", {"type": "is-refusal"}, {"type": "refusal"}, True, {}),
    ("not is refusal", "Sure, here it is.", {"type": "not-is-refusal"}, {"type": "not-refusal"}, True, {}),
    ("latency", "fast", {"type": "latency", "threshold": 600000}, {"type": "latency", "value": 600000}, True, {}),
    ("cost", "cheap", {"type": "cost", "threshold": 1.0}, {"type": "cost", "value": 1.0}, True, {}),
    ("cost fail", "cheap", {"type": "cost", "threshold": 1e-12}, {"type": "cost", "value": 1e-12}, False, {}),
    ("python", "ok then", {"type": "python", "value": "output.startswith('ok')"},
     {"type": "python", "value": "output.startswith('ok')"}, True, {}),
    ("python fail", "then ok", {"type": "python", "value": "output.startswith('ok')"},
     {"type": "python", "value": "output.startswith('ok')"}, False, {}),
    ("llm rubric", "GOOD answer", {"type": "llm-rubric", "value": "polite"}, {"type": "rubric", "value": "polite"},
     True, {}),
    ("llm rubric fail", "bad answer", {"type": "llm-rubric", "value": "polite"}, {"type": "rubric", "value": "polite"},
     False, {}),
    ("factuality", "GOOD Paris", {"type": "factuality", "value": "Paris"}, {"type": "factuality", "value": "Paris"},
     True, {}),
    ("g eval fail", "bad", {"type": "g-eval", "value": "coherent"}, {"type": "g-eval", "value": "coherent"}, False, {}),
    ("context faithfulness", "GOOD claim", {"type": "context-faithfulness"}, {"type": "context-faithfulness"}, True,
     {"context": "the claim"}),
    ("context recall fail", "x", {"type": "context-recall", "value": "Paris"},
     {"type": "context-recall", "value": "Paris"}, False, {"context": "nothing relevant"}),
    ("answer relevance", "GOOD", {"type": "answer-relevance"}, {"type": "answer-relevance"}, True, {}),
]


def _parity_judge(api: str, body: dict) -> str | None:
    text = body["messages"][-1]["content"] if body.get("messages") else ""
    if "ANSWER:\n" not in text and "Grade" not in json.dumps(body):
        return None
    shown = text.split("ANSWER:\n", 1)[-1]
    ok = "GOOD" in shown or "GOOD" in re.sub(r"INPUT:\n.*?\n\n", "", text, flags=re.S).split("[[answer")[0]
    return json.dumps({"score": 5 if ok else 1, "reason": "GOOD " + ("found" if ok else "missing")})


def test_every_supported_assertion_gives_the_same_verdict_imported_and_native(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    used = {t["type"].removeprefix("not-") for _n, _a, t, _g, _p, _v in PARITY}
    assert used == set(PROMPTFOO_ASSERTIONS), set(PROMPTFOO_ASSERTIONS) - used
    config = {"prompts": ["{{question}}"], "providers": ["openai:gpt-4o-2024-08-06"],
              "defaultTest": {"vars": {"context": "none"}},
              "tests": [{"description": name, "vars": {"question": f"[[answer: {ans}]]", **extra}, "assert": [pf]}
                        for name, ans, pf, _g, _p, extra in PARITY]}
    g = init_repo(tmp_path / "parity")
    (g.root / "promptfooconfig.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    commit_all(g, "promptfoo")
    assert main(["-C", str(g.root), "import", "promptfoo", "promptfooconfig.json"]) == 0
    out = capsys.readouterr().out
    assert "Everything was converted." in out, out
    prompt = "prompt-1"  # one prompt, one provider
    native = [{"id": f"native-{name.replace(' ', '-')}", "prompt": prompt,
               "vars": {"context": "none", "question": f"[[answer: {ans}]]", **extra}, "assert": [spec]}
              for name, ans, _pf, spec, _p, extra in PARITY]
    (g.root / "evals/native.jsonl").write_text("".join(json.dumps(c) + "\n" for c in native), encoding="utf-8")
    manifest = (g.root / "gating.yml").read_text()
    assert "  - evals/promptfoo.jsonl\n" in manifest
    (g.root / "gating.yml").write_text(manifest.replace("  - evals/promptfoo.jsonl\n",
                                                        "  - evals/promptfoo.jsonl\n  - evals/native.jsonl\n"))
    with LLMServer(answer=_parity_judge) as server:
        for k, v in {**server.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "c")}.items():
            monkeypatch.setenv(k, v)
        main(["-C", str(g.root), "eval", "--json", str(tmp_path / "r.json")])
    cases = {c["id"]: c for c in json.loads((tmp_path / "r.json").read_text())["head"]["cases"]}
    assert len(cases) == 2 * len(PARITY)
    assert not [c["id"] for c in cases.values() if c["error"]], [(c["id"], c["error_message"]) for c in cases.values()
                                                                  if c["error"]]
    for name, _ans, _pf, _spec, expected, _x in PARITY:
        slug = name.replace(" ", "-")
        imported, own = cases[slug], cases[f"native-{slug}"]
        assert (imported["passed"], own["passed"]) == (expected, expected), \
            (name, imported["assertions"], own["assertions"])
        assert [a["score"] for a in imported["assertions"]] == [a["score"] for a in own["assertions"]], name


# -- promptfoo's Python test generators become gating's `evals.generate` ------------------------------------------

GENERATED = """\
description: Generated bot
prompts:
  - "{{question}}"
providers:
  - openai:gpt-4o-2024-08-06
defaultTest:
  assert:
    - type: not-icontains
      value: password
tests:
  - file://tests/gen.py:generate_tests
  - path: file://tests/gen.py:from_config
    config: {answers: ["[[answer: refund now]]", "[[answer: no]]"]}
  - description: written
    vars: {question: "[[answer: a refund]]"}
    assert: [{type: icontains, value: refund}]
"""

GEN_FILES = {
    "tests/gen.py": (
        "from words import WORD\n\n\n"
        "def generate_tests(config=None):\n"
        "    return [\n"
        "        {'description': 'Refund soon', 'vars': {'question': '[[answer: Refund soon]]'},\n"
        "         'assert': [{'type': 'icontains', 'value': WORD}]},\n"
        "        {'description': 'matrix', 'vars': {'question': ['[[answer: refund a]]', '[[answer: b]]']},\n"
        "         'assert': [{'type': 'icontains', 'value': WORD}]},\n"
        "        {'description': 'half', 'vars': {'question': '[[answer: refund]]'}, 'threshold': 0.5,\n"
        "         'assert': [{'type': 'contains', 'value': 'refund'}, {'type': 'contains', 'value': 'never'}]},\n"
        "    ]\n\n\n"
        "def from_config(config):\n"
        "    return [{'description': f'given {i}', 'vars': {'question': q},\n"
        "             'assert': [{'type': 'contains', 'value': 'refund'}]} for i, q in enumerate(config['answers'])]\n\n\n"
        "def with_js(config=None):\n"
        "    return [{'description': 'js', 'vars': {'question': 'x'},\n"
        "             'assert': [{'type': 'javascript', 'value': 'output.length > 1'}]}]\n"),
    "tests/words.py": "WORD = 'refund'\n",
}


def generated_repo(tmp_path: Path, config: str = GENERATED) -> Git:
    g = init_repo(tmp_path / "gen")
    for path, text in {"promptfooconfig.yaml": config, **GEN_FILES}.items():
        (g.root / path).parent.mkdir(parents=True, exist_ok=True)
        (g.root / path).write_text(text, encoding="utf-8")
    commit_all(g, "promptfoo evals")
    return g


def test_python_test_generators_become_gating_generators_and_give_promptfoos_verdicts(
        tmp_path: Path, llm: LLMServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:  # noqa: F811
    g = generated_repo(tmp_path)
    assert main(["-C", str(g.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 0
    out = capsys.readouterr().out
    assert "Not converted" not in out, out
    manifest = (g.root / "gating.yml").read_text()
    for part in ("  generate:\n  - file://evals/promptfoo_generators.py:generate_tests\n"
                 "  - file://evals/promptfoo_generators.py:from_config\n",
                 "  python:\n  - evals/promptfoo_generators.py\n  - tests/gen.py\n  - tests/words.py\n"):
        assert part in manifest, manifest
    adapter = (g.root / "evals/promptfoo_generators.py").read_text()
    assert "{'answers': ['[[answer: refund now]]', '[[answer: no]]']}" in adapter
    commit_all(g, "gating")

    for k, v in {**llm.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "c")}.items():
        monkeypatch.setenv(k, v)
    main(["-C", str(g.root), "eval", "--json", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    verdicts = {c["id"]: c["passed"] for c in report["head"]["cases"]}
    assert verdicts == {
        "written": True,
        "refund-soon": True, "matrix-1": True, "matrix-2": False,  # a list var runs once per value
        "half": True,  # 1 of 2 (and the default) passes: 0.67 >= the test's threshold 0.5
        "given-0": True, "given-1": False,  # the config reaches the function
    }, verdicts
    half = next(c for c in report["head"]["cases"] if c["id"] == "half")
    assert [a["type"] for a in half["assertions"]] == ["not-icontains", "contains", "contains"]  # defaultTest too


def test_a_generated_test_that_cannot_convert_fails_naming_what(tmp_path: Path, llm: LLMServer,  # noqa: F811
                                                                monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    g = generated_repo(tmp_path, GENERATED.replace("tests/gen.py:generate_tests", "tests/gen.py:with_js"))
    assert main(["-C", str(g.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 0
    capsys.readouterr()
    for k, v in {**llm.env(), "GATING_PROVIDER": "live", "GATING_CACHE_DIR": str(tmp_path / "c")}.items():
        monkeypatch.setenv(k, v)
    assert main(["-C", str(g.root), "eval"]) == 2
    err = capsys.readouterr().err
    assert ("gating.yml: evals.generate: evals/promptfoo_generators.py:with_js raised ValueError: tests/gen.py:with_js "
            "returned promptfoo tests gating cannot convert: 1 x assertion type `javascript`") in err, err


@pytest.mark.parametrize(("tests", "says"), [
    ("file://tests/missing.py:make", "tests from a Python generator tests/missing.py (not a file of this repository)"),
    ("file://tests/my-gen.py:make", "tests from a Python generator tests/my-gen.py (its name is not a Python module "
                                    "name: rename it)"),
    ("file://tests/gen.js", "tests from a JavaScript generator"),
])
def test_a_generator_that_cannot_convert_is_listed(tmp_path: Path, tests: str, says: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    g = generated_repo(tmp_path, GENERATED.replace("file://tests/gen.py:generate_tests", tests))
    (g.root / "tests/my-gen.py").write_text("def make():\n    return []\n")
    (g.root / "tests/gen.js").write_text("module.exports = () => []\n")
    commit_all(g, "more")
    assert main(["-C", str(g.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"1 x {says}" in out, out


def test_convert_generated_names_what_does_not_convert() -> None:
    from gating.adopt.promptfoo import convert_generated

    got = convert_generated([{"description": "ok", "vars": {"q": "x"}, "assert": [{"type": "contains", "value": "x"}]}],
                            ["p"], "gen.py:make")
    assert got == [{"id": "ok", "prompt": "p", "vars": {"q": "x"}, "assert": [{"type": "contains", "value": "x"}],
                    "description": "ok"}]
    with pytest.raises(ValueError, match=r"^gen.py:make returned dict, not a list of promptfoo tests$"):
        convert_generated({"vars": {}}, ["p"], "gen.py:make")
    with pytest.raises(ValueError, match=r"^gen.py:make returned promptfoo tests gating cannot convert: "
                                         r"1 x test key `provider`; 1 x test that is not a mapping$"):
        convert_generated([{"vars": {}, "provider": "openai:gpt-4o"}, "file://more.yaml"], ["p"], "gen.py:make")


@pytest.mark.parametrize(("tests", "fn", "note"), [
    ("file://tests/gen.py", "generate_tests", "tests from tests/gen.py name no function: `generate_tests` is called"),
    ("python:tests/gen.py:with_js", "with_js", None),
    ("tests/gen.py:with_js", "with_js", None),
], ids=["no-function", "python-prefix", "bare-path"])
def test_generator_reference_forms(tmp_path: Path, tests: str, fn: str, note: str | None,
                                   capsys: pytest.CaptureFixture) -> None:
    g = generated_repo(tmp_path, GENERATED.replace("file://tests/gen.py:generate_tests", tests))
    assert main(["-C", str(g.root), "import", "promptfoo", "promptfooconfig.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"  - file://evals/promptfoo_generators.py:{fn}\n" in (g.root / "gating.yml").read_text()
    assert f"tests = importlib.import_module('gen').{fn}()\n" in (g.root / "evals/promptfoo_generators.py").read_text()
    assert note is None or note in out
