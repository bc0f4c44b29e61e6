"""Minute roll-ups merge exactly and their latency sketch answers percentiles within 1%."""

import random

from gating.monitor.rollup import LatencySketch, MemoryRollups, Rollup, total


def test_sketch_percentiles_are_within_the_stated_accuracy_of_the_exact_ones():
    rng = random.Random(7)
    values = [rng.lognormvariate(5, 1) for _ in range(20_000)]
    sketch = LatencySketch()
    for v in values:
        sketch.add(v)
    exact = sorted(values)
    for q in (0.5, 0.9, 0.99):
        want = exact[int(q * (len(exact) - 1))]
        assert abs(sketch.quantile(q) - want) / want <= 0.011, q


def test_merging_sketches_equals_one_sketch_of_all_values_and_round_trips_through_json():
    a, b, both = LatencySketch(), LatencySketch(), LatencySketch()
    for i, v in enumerate([0.0, 3.0, 12.5, 80.0, 80.0, 1500.0]):
        (a if i % 2 else b).add(v)
        both.add(v)
    a.merge(b)
    assert a == both and a.count == 6
    assert LatencySketch.from_dict(a.to_dict()) == a
    assert LatencySketch().quantile(0.5) is None


def test_a_window_is_the_merge_of_its_minutes_and_the_source_filters_by_key_and_window():
    def minute(m, requests, errors, system="abc"):
        r = Rollup(repo="o/r", system=system, component="answer", stage="llm", minute=m, requests=requests,
                   errors={"timeout": errors}, input_tokens=10 * requests, cost=0.5, feedback={"negative": 1})
        r.latency.add(100.0, requests)
        return r

    source = MemoryRollups([minute(10, 100, 1), minute(11, 200, 3), minute(12, 50, 0), minute(11, 9, 9, "def")])
    window = total(source.rollups("o/r", since=10, until=12, system="abc"))
    assert (window.requests, window.error_count, window.input_tokens) == (300, 4, 3000)
    assert window.feedback == {"negative": 2} and window.latency.count == 300
    assert abs(window.cost - 1.0) < 1e-9
    assert Rollup.from_dict(window.to_dict()) == window
    assert list(source.rollups("x/y", since=0, until=99)) == []


def test_the_indexed_source_answers_window_queries_like_the_list():
    from gating.monitor.rollup import IndexedRollups

    rows = [Rollup(repo=repo, system=system, component=c, stage=st, minute=m, requests=m)
            for repo in ("o/r", "o/s") for system in ("abc", "def") for c in ("answer", "")
            for st in ("request", "llm") for m in range(5, 25, 3)]
    mem, idx = MemoryRollups(rows), IndexedRollups(rows)
    for kw in ({}, {"system": "abc"}, {"component": ""}, {"stage": "llm", "system": "def"}):
        assert sorted(map(repr, idx.rollups("o/r", since=8, until=20, **kw))) == \
            sorted(map(repr, mem.rollups("o/r", since=8, until=20, **kw)))
