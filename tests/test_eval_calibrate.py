"""Judge calibration against human ratings: agreement, kappa, confusion matrix, the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gating.commands.cli import main
from gating.evals.calibrate import Rating, load_ratings, summarize
from gating.evals.dataset import DatasetError
from gating.git.repository import Git


def ratings(humans: list[int]) -> list[Rating]:
    return [Rating(f"r{i}", "rubric", "polite", "q", "a", h, i + 1) for i, h in enumerate(humans)]


def test_summary_statistics() -> None:
    human = [1, 2, 3, 4, 5, 3, 4, 2, 5, 1, 3, 4]
    judge = [1, 2, 3, 5, 5, 2, 4, 3, 4, 1, 3, 3]
    cal = summarize(ratings(human), [(j, "") for j in judge], path="h.jsonl", judge="anthropic/x", metric="exact")
    assert (cal.n, cal.exact, cal.within_one) == (12, pytest.approx(7 / 12), 1.0)
    assert cal.kappa == pytest.approx(0.8780487804878049)  # scikit-learn's quadratic weighted kappa
    assert cal.confusion[3] == [0, 0, 1, 1, 1]
    assert not cal.calibrated  # exact agreement 0.583 < 0.8
    lenient = summarize(ratings(human), [(j, "") for j in judge], path="h.jsonl", judge="x", metric="within_one")
    assert lenient.calibrated and lenient.agreement == 1.0


def test_unparsed_judge_replies_count_as_disagreement() -> None:
    cal = summarize(ratings([5, 5, 5, 5, 5]), [(5, ""), (5, ""), (5, ""), (5, ""), (None, "parse: junk")],
                    path="h.jsonl", judge="x")
    # 0.8 exact agreement, but on ratings that never vary there is no agreement beyond chance to show
    assert (cal.exact, cal.unparsed, cal.kappa, cal.calibrated) == (0.8, 1, 0.0, False)
    assert cal.items[-1] == {"id": "r4", "human": 5, "judge": None, "reason": "parse: junk"}


def test_ratings_file_problems_have_lines() -> None:
    data = b'{"id": "a", "type": "rubric", "rubric": "x", "output": "o", "human": 7}\n' \
           b'{"id": "b", "type": "factuality", "output": "o", "human": 3}\n'
    with pytest.raises(DatasetError) as e:
        load_ratings("h.jsonl", data)
    assert e.value.problems == ["h.jsonl:1: `human` must be a whole number 1-5, got 7",
                                "h.jsonl:2: a factuality rating needs `reference`"]


def test_calibrate_the_example_judge_on_its_cassette(example_repo: Git, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "cal.json"
    code = main(["-C", str(example_repo.root), "calibrate", "--no-cache", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("### Judge calibration: calibrated\n\nJudge `anthropic/claude-3-5-sonnet-20241022` on 20 "
                          "human-rated examples (`evals/human_ratings.jsonl`).")
    assert "| exact agreement | 0.850 |" in out and "| within-one agreement | 0.950 |" in out
    assert "| quadratic weighted kappa | 0.936 |" in out
    doc = json.loads(out_json.read_text())
    assert doc["schema"] == "gating.eval.calibration/1" and doc["confusion"][0] == [3, 1, 0, 0, 0]


def test_below_the_configured_agreement_the_judge_is_not_calibrated(example_repo: Git,
                                                                    capsys: pytest.CaptureFixture) -> None:
    manifest = example_repo.root / "gating.yml"
    manifest.write_text(manifest.read_text().replace("min_agreement: 0.8", "min_agreement: 0.95"))
    code = main(["-C", str(example_repo.root), "calibrate", "--no-cache"])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.startswith("### Judge calibration: **not calibrated**")
    assert err == ("gating: the judge is not calibrated: quadratic weighted kappa 0.936 < 0.95 (agreement beyond "
                   "chance is the criterion)\n")


def test_unparsed_replies_count_against_kappa_too_never_drop_out() -> None:
    """Five replies that parse agree perfectly; five that do not must not vanish from the kappa."""
    human = [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
    judged = [(h, "") for h in human[:5]] + [(None, "parse: junk")] * 5
    cal = summarize(ratings(human), judged, path="h.jsonl", judge="x", metric="kappa")
    assert cal.exact == 0.5 and cal.unparsed == 5
    assert cal.kappa is not None and cal.kappa < 0.8 and not cal.calibrated
    assert sum(map(sum, cal.confusion)) == 5  # the matrix shows the parsed ones; the table says how many did not


@pytest.mark.parametrize("human, judge", [([4, 4, 4, 4], [4, 4, 4, 4]), ([3], [3])], ids=["constant", "one-case"])
def test_an_undefined_kappa_is_not_calibrated(human: list[int], judge: list[int]) -> None:
    cal = summarize(ratings(human), [(j, "") for j in judge], path="h.jsonl", judge="x", metric="exact")
    assert cal.kappa is None and not cal.calibrated
    assert cal.why == "kappa is undefined: the ratings do not vary (constant ratings, or one example)"
    from gating.evals.report import render_calibration_markdown

    assert "| quadratic weighted kappa | undefined |" in render_calibration_markdown(cal)


def test_a_judge_that_always_answers_the_majority_rating_does_not_pass() -> None:
    human = [4] * 17 + [1, 2, 5]
    cal = summarize(ratings(human), [(4, "")] * 20, path="h.jsonl", judge="x", metric="exact")
    assert cal.exact == 0.85  # above min_agreement 0.8: exact agreement alone would call it calibrated
    assert cal.kappa == pytest.approx(0.0) and not cal.calibrated
    assert cal.why == "quadratic weighted kappa 0.000 < 0.8 (agreement beyond chance is the criterion)"
