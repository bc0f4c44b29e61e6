"""Canary analysis: the canary system's production roll-ups against the baseline's over the same window.

Pure: a RollupSource, the repository, the two systems (commit SHA and/or snapshot digest) and the
window go in; pass, fail or "not enough traffic yet" comes out, with every figure that decided it.
The App's endpoints (Argo Rollouts' web metric provider, Flagger's webhooks) and
`gating canary analyze` all call `analyze`, so they agree.

What is compared, each one-sided (only a canary that is worse fails):
- the error rate, overall and per category, with a two-proportion z-test. The overall rate is the
  headline test: it runs at `alpha`, and the analysis answers only once both systems served the
  minimum sample that detects a rise of `min_effect` (absolute) at the stated power; the categories
  share `alpha` between them (Bonferroni), so splitting errors into categories adds few false alarms;
- latency per stage: Mann-Whitney U over the latency sketches' buckets (every request of a bucket
  takes the bucket's value, ties corrected), and the p50, p95 and p99 of each side. A stage fails
  when the shift is significant *and* a percentile rose by more than `latency_tolerance`: sketches of
  real traffic are clumped (requests of one minute are not independent), so significance alone would
  fire on noise;
- tokens and cost per request: Welch's test over per-minute means (the roll-ups keep sums, not
  per-request values), failing on a significant rise beyond `usage_tolerance`;
- the negative-feedback rate (negative feedback per request), as the error rate, failing on a
  significant rise of at least `feedback_effect`.

Roll-up convention (gating.monitor.rollup): requests, errors and feedback are in the `request` stage;
other stages carry their spans' latency; tokens and cost are summed over the stages; whole-system
records (component "") are read instead of the components' when the store has them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from statistics import NormalDist
from typing import Any

from gating.errors import GatingError
from gating.monitor.rollup import STAGES, WHOLE_SYSTEM, LatencySketch, Rollup, RollupSource

PASS, FAIL, WAIT = "pass", "fail", "not enough traffic yet"
VERDICTS = (PASS, FAIL, WAIT)
QUANTILES = (0.5, 0.95, 0.99)  # reported per stage
DECIDING = (0.5, 0.95)  # a rise of these fails a stage; a window's p99 rests on too few spans to decide alone
_N = NormalDist()


class CanaryError(GatingError):
    """An analysis that cannot be asked as given (a bad window, the same system twice, ...)."""


@dataclass(frozen=True)
class Policy:
    """The significance, the power and the smallest regressions worth failing a canary for."""

    alpha: float = 0.05  # chance of failing a canary that is as good as the baseline (per test family)
    power: float = 0.8  # chance of failing a canary whose error rate is `min_effect` worse
    min_effect: float = 0.01  # the error-rate rise (absolute: 0.01 = one percentage point) to detect
    latency_tolerance: float = 0.25  # relative rise of a latency percentile that counts as a regression
    usage_tolerance: float = 0.10  # relative rise of tokens or cost per request that counts
    feedback_effect: float = 0.02  # absolute rise of the negative-feedback rate that counts
    min_latency_samples: int = 200  # timed spans per side before a stage is compared
    min_minutes: int = 10  # minutes with traffic per side before latency, tokens and cost are compared

    def check(self) -> None:
        problems = [f"{name} must be between 0 and 1 (got {v})" for name, v in
                    (("alpha", self.alpha), ("power", self.power), ("min_effect", self.min_effect))
                    if not 0 < v < 1]
        if problems:
            raise CanaryError("; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Check:
    """One comparison: its verdict, both sides' values, the test's p-value and the sample sizes."""

    name: str  # error_rate, error_rate:<category>, latency:<stage>, tokens_per_request, ...
    verdict: str  # one of VERDICTS
    canary: float | None
    baseline: float | None
    p_value: float | None
    samples: tuple[int, int]  # (canary, baseline)
    needed: int | None  # the samples per side the test needs (None: no stated minimum)
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "verdict": self.verdict, "canary": self.canary, "baseline": self.baseline,
                "p_value": self.p_value, "samples": {"canary": self.samples[0], "baseline": self.samples[1]},
                "needed": self.needed, "reason": self.reason, **({"detail": self.detail} if self.detail else {})}


@dataclass(frozen=True)
class Analysis:
    repo: str
    canary: tuple[str, ...]
    baseline: tuple[str, ...]
    since: int  # the window [since, until) in unix minutes
    until: int
    verdict: str
    reason: str
    checks: tuple[Check, ...]
    required_requests: int  # per side, for the headline error-rate test
    requests: tuple[int, int]  # (canary, baseline) in the window
    policy: Policy
    notes: tuple[str, ...] = ()  # how the systems were matched, where it is not plain (see `sides`)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == FAIL]

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "pass": self.verdict == PASS, "fail": self.verdict == FAIL,
            "reason": self.reason, "repository": self.repo,
            "canary": {"systems": list(self.canary), "requests": self.requests[0]},
            "baseline": {"systems": list(self.baseline), "requests": self.requests[1]},
            "window": {"since": iso(self.since), "until": iso(self.until), "minutes": self.until - self.since},
            "required_requests": self.required_requests, "policy": self.policy.to_dict(),
            "checks": [c.to_dict() for c in self.checks], "notes": list(self.notes),
        }


def iso(minute: int) -> str:
    return datetime.fromtimestamp(minute * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- statistics --------------------------------------------------------------------------------------


def sample_size(p0: float, effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Requests per side a one-sided two-proportion z-test needs to detect a rise from p0 to p0 +
    effect at significance `alpha` with probability `power` (the normal approximation, pooled null)."""
    if not 0 < effect < 1:
        raise CanaryError(f"the effect to detect must be between 0 and 1 (got {effect})")
    p0 = min(max(p0, 0.0), 1 - effect)
    p1 = p0 + effect
    pbar = (p0 + p1) / 2
    za, zb = _N.inv_cdf(1 - alpha), _N.inv_cdf(power)
    n = (za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p0 * (1 - p0) + p1 * (1 - p1))) ** 2 / effect ** 2
    return max(1, math.ceil(n))


def two_proportion(x1: int, n1: int, x2: int, n2: int) -> float:
    """One-sided p-value that the first proportion is larger (pooled z-test); 1.0 when undefined."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return 1 - _N.cdf((x1 / n1 - x2 / n2) / se)


def mann_whitney(a: LatencySketch, b: LatencySketch) -> float:
    """One-sided p-value that `a` is stochastically larger than `b`, over the sketches' buckets (a
    bucket is a tie group), normal approximation with the tie correction."""
    n1, n2 = a.count, b.count
    if n1 == 0 or n2 == 0:
        return 1.0
    keys = sorted(set(a.buckets) | set(b.buckets))
    groups = [(a.zero, b.zero)] + [(a.buckets.get(k, 0), b.buckets.get(k, 0)) for k in keys]
    u, below, ties = 0.0, 0, 0
    for ca, cb in groups:
        u += ca * (below + cb / 2)
        below += cb
        t = ca + cb
        ties += t ** 3 - t
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if var <= 0:
        return 1.0
    return 1 - _N.cdf((u - n1 * n2 / 2) / math.sqrt(var))


def welch(a: Sequence[float], b: Sequence[float]) -> float:
    """One-sided p-value that mean(a) > mean(b) (Welch's statistic, normal approximation)."""
    if len(a) < 2 or len(b) < 2:
        return 1.0
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    va = sum((x - ma) ** 2 for x in a) / (len(a) - 1)
    vb = sum((x - mb) ** 2 for x in b) / (len(b) - 1)
    se = math.sqrt(va / len(a) + vb / len(b))
    if se == 0:
        return 0.0 if ma > mb else 1.0
    return 1 - _N.cdf((ma - mb) / se)


# -- reading the window ------------------------------------------------------------------------------


@dataclass
class Side:
    """One system's window: the request stage merged, each stage's latency, per-minute usage."""

    requests: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    feedback: dict[str, int] = field(default_factory=dict)
    latency: dict[str, LatencySketch] = field(default_factory=dict)
    minute_latency: dict[str, dict[int, LatencySketch]] = field(default_factory=dict)
    minute_requests: dict[int, int] = field(default_factory=dict)
    minute_tokens: dict[int, int] = field(default_factory=dict)
    minute_cost: dict[int, float] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def per_request(self, sums: dict[int, float] | dict[int, int]) -> list[float]:
        return [sums.get(m, 0) / n for m, n in sorted(self.minute_requests.items()) if n > 0]

    @property
    def tokens(self) -> float:
        return sum(self.minute_tokens.values())

    @property
    def cost(self) -> float:
        return sum(self.minute_cost.values())


def read_side(source: RollupSource, repo: str, systems: Sequence[str], since: int, until: int) -> Side:
    side = Side()
    for system in systems:
        rows = list(source.rollups(repo, since=since, until=until, system=system))
        if any(r.component == WHOLE_SYSTEM for r in rows):
            rows = [r for r in rows if r.component == WHOLE_SYSTEM]  # never the components as well
        _add(side, rows)
    return side


def _add(side: Side, rows: Iterable[Rollup]) -> None:
    for r in rows:
        if r.stage == "request":
            side.requests += r.requests
            side.minute_requests[r.minute] = side.minute_requests.get(r.minute, 0) + r.requests
            for mine, theirs in ((side.errors, r.errors), (side.feedback, r.feedback)):
                for k, n in theirs.items():
                    mine[k] = mine.get(k, 0) + n
        side.latency.setdefault(r.stage, LatencySketch()).merge(r.latency)
        side.minute_latency.setdefault(r.stage, {}).setdefault(r.minute, LatencySketch()).merge(r.latency)
        side.minute_tokens[r.minute] = side.minute_tokens.get(r.minute, 0) + r.input_tokens + r.output_tokens
        side.minute_cost[r.minute] = side.minute_cost.get(r.minute, 0.0) + r.cost


# -- the analysis ------------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.2f}%"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"p={p:.3g}"


def _significant(p: float, level: float, enough: bool, events: int) -> bool:
    """Significant at `level` once the minimum sample is in; before it, only a gross regression fails
    early (ten times stricter, at least ten events between the sides), because the rollout tool asks
    again and again while traffic arrives and each early look is another chance of a false alarm."""
    return p < level if enough else (p < level / 10 and events >= 10)


def error_checks(c: Side, b: Side, policy: Policy) -> tuple[list[Check], int]:
    """The headline error-rate test and one per category; and the requests per side it needs."""
    p0 = b.error_count / b.requests if b.requests else 0.0
    needed = sample_size(p0, policy.min_effect, policy.alpha, policy.power)
    rate_c = c.error_count / c.requests if c.requests else None
    rate_b = p0 if b.requests else None
    p = two_proportion(c.error_count, c.requests, b.error_count, b.requests)
    figures = (f"error rate {_pct(rate_c)} on the canary vs {_pct(rate_b)} on the baseline "
               f"({c.requests:,} vs {b.requests:,} requests, {_p(p)})")
    enough = c.requests >= needed and b.requests >= needed
    if _significant(p, policy.alpha, enough, c.error_count + b.error_count):
        verdict, why = FAIL, f"{figures}: significantly higher at alpha {policy.alpha:g}"
    elif not enough:
        verdict, why = WAIT, (f"{figures}; detecting a rise of {policy.min_effect * 100:g} percentage point(s) at "
                              f"alpha {policy.alpha:g} with power {policy.power:g} needs {needed:,} requests on each")
    else:
        verdict, why = PASS, f"{figures}: not significantly higher"
    out = [Check("error_rate", verdict, rate_c, rate_b, p, (c.requests, b.requests), needed, why)]
    categories = sorted(k for k in set(c.errors) | set(b.errors) if c.errors.get(k) or b.errors.get(k))
    if len(categories) > 1 or (categories and categories != ["other"]):
        level = policy.alpha / len(categories)
        for cat in categories:
            xc, xb = c.errors.get(cat, 0), b.errors.get(cat, 0)
            pc = two_proportion(xc, c.requests, xb, b.requests)
            rc = xc / c.requests if c.requests else None
            rb = xb / b.requests if b.requests else None
            fig = f"{cat} errors {_pct(rc)} vs {_pct(rb)} ({_p(pc)}, alpha {level:.3g} per category)"
            if _significant(pc, level, enough, xc + xb):
                v, w = FAIL, f"{fig}: significantly higher"
            elif not enough:
                v, w = WAIT, f"{fig}; waiting for {needed:,} requests on each"
            else:
                v, w = PASS, f"{fig}: not significantly higher"
            out.append(Check(f"error_rate:{cat}", v, rc, rb, pc, (c.requests, b.requests), needed, w))
    return out, needed


def latency_checks(c: Side, b: Side, policy: Policy) -> list[Check]:
    stages = [s for s in STAGES if b.latency.get(s, LatencySketch()).count or c.latency.get(s, LatencySketch()).count]
    out = []
    for stage in stages:
        sc, sb = c.latency.get(stage, LatencySketch()), b.latency.get(stage, LatencySketch())
        qc = {q: sc.quantile(q) for q in QUANTILES}
        qb = {q: sb.quantile(q) for q in QUANTILES}
        detail: dict[str, Any] = {f"p{round(q * 100)}": {"canary": qc[q], "baseline": qb[q]} for q in QUANTILES}
        n = (sc.count, sb.count)
        minutes_c, minutes_b = c.minute_latency.get(stage, {}), b.minute_latency.get(stage, {})
        if min(n) < policy.min_latency_samples or min(len(minutes_c), len(minutes_b)) < policy.min_minutes:
            out.append(Check(f"latency:{stage}", WAIT, qc[0.95], qb[0.95], None, n, policy.min_latency_samples,
                             f"{stage} latency: {n[0]:,} canary and {n[1]:,} baseline spans in {len(minutes_c)} and "
                             f"{len(minutes_b)} minutes, the comparison needs {policy.min_latency_samples:,} spans in "
                             f"{policy.min_minutes} minutes on each", detail))
            continue
        p = mann_whitney(sc, sb)
        rises = {q: c_q / b_q - 1 for q in DECIDING if (c_q := qc[q]) is not None and (b_q := qb[q])}
        worst = max(rises, key=lambda q: rises[q]) if rises else 0.95
        rise = rises.get(worst, 0.0)
        # spans of one minute are not independent (a slow provider minute slows them all): the rise
        # must also hold across minutes, the percentile of each minute compared as a sample
        by_minute = welch([x for m in minutes_c.values() if (x := m.quantile(worst)) is not None],
                          [x for m in minutes_b.values() if (x := m.quantile(worst)) is not None])
        detail["minutes_p_value"] = by_minute
        fig = (f"{stage} latency p{round(worst * 100)} {qc[worst] or 0:,.0f} ms on the canary vs {qb[worst] or 0:,.0f} ms "
               f"({rise * 100:+.0f}%, Mann-Whitney {_p(p)}, across minutes {_p(by_minute)})")
        level = policy.alpha / len(stages)
        if p < level and by_minute < level and rise > policy.latency_tolerance:
            v, w = FAIL, f"{fig}: slower beyond the {policy.latency_tolerance * 100:g}% tolerance"
        else:
            v, w = PASS, f"{fig}: within the {policy.latency_tolerance * 100:g}% tolerance or not significant"
        out.append(Check(f"latency:{stage}", v, qc[worst], qb[worst], p, n, policy.min_latency_samples, w, detail))
    return out


def usage_checks(c: Side, b: Side, policy: Policy) -> list[Check]:
    out = []
    for name, sums_c, sums_b, total_c, total_b, unit in (
            ("tokens_per_request", c.minute_tokens, b.minute_tokens, c.tokens, b.tokens, "tokens"),
            ("cost_per_request", c.minute_cost, b.minute_cost, c.cost, b.cost, "")):
        if not total_c and not total_b:
            continue  # nothing spent on either side: the telemetry carries no usage
        vc = total_c / c.requests if c.requests else None
        vb = total_b / b.requests if b.requests else None
        series_c, series_b = c.per_request(sums_c), b.per_request(sums_b)
        n = (len(series_c), len(series_b))
        what = name.replace("_", " ")
        if min(n) < policy.min_minutes or vc is None or vb is None:
            out.append(Check(name, WAIT, vc, vb, None, n, policy.min_minutes,
                             f"{what}: {n[0]} canary and {n[1]} baseline minutes with traffic, the comparison "
                             f"needs {policy.min_minutes} on each"))
            continue
        p = welch(series_c, series_b)
        rise = vc / vb - 1 if vb else (math.inf if vc else 0.0)
        fig = f"{what} {_usage(vc, unit)} on the canary vs {_usage(vb, unit)} ({rise * 100:+.1f}%, Welch {_p(p)} over minutes)"
        if p < policy.alpha and rise > policy.usage_tolerance:
            v, w = FAIL, f"{fig}: higher beyond the {policy.usage_tolerance * 100:g}% tolerance"
        else:
            v, w = PASS, f"{fig}: within the {policy.usage_tolerance * 100:g}% tolerance or not significant"
        out.append(Check(name, v, vc, vb, p, n, policy.min_minutes, w))
    return out


def _usage(x: float, unit: str) -> str:
    return f"{x:,.1f} {unit}" if unit else f"{x:.6f}"


def feedback_check(c: Side, b: Side, policy: Policy) -> list[Check]:
    xc, xb = c.feedback.get("negative", 0), b.feedback.get("negative", 0)
    if not any(c.feedback.values()) and not any(b.feedback.values()):
        return []  # no feedback reaches the monitor
    p0 = xb / b.requests if b.requests else 0.0
    needed = sample_size(p0, min(policy.feedback_effect, 0.99), policy.alpha, policy.power)
    rc = xc / c.requests if c.requests else None
    rb = p0 if b.requests else None
    p = two_proportion(xc, c.requests, xb, b.requests)
    fig = f"negative feedback {_pct(rc)} of requests on the canary vs {_pct(rb)} ({_p(p)})"
    rise = (rc or 0.0) - (rb or 0.0)
    if p < policy.alpha and rise >= policy.feedback_effect:
        v, w = FAIL, f"{fig}: {rise * 100:.2f} points higher"
    elif c.requests < needed or b.requests < needed:
        v, w = WAIT, f"{fig}; the comparison needs {needed:,} requests on each"
    else:
        v, w = PASS, f"{fig}: not {policy.feedback_effect * 100:g} points higher or not significant"
    return [Check("negative_feedback_rate", v, rc, rb, p, (c.requests, b.requests), needed, w)]


def sides(canary: str, baseline: str, snapshots: Mapping[str, str | None],
          unknown: Mapping[str, str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """The ids each side's roll-ups are matched by: its commit SHA and the snapshot digest of the
    system at that commit (`snapshots`, SHA -> digest or None), since telemetry names the system it
    served by either (`gating.commit` / `service.version`, or `gating.snapshot`). Notes say where a
    side is matched by its SHA alone: its snapshot is unknown (`unknown`: SHA -> why), or both
    commits have the same system (a code-only change), whose digest tells them apart no more."""
    notes: list[str] = []
    ids = {canary: [canary], baseline: [baseline]}
    digests = {sha: snapshots.get(sha) for sha in (canary, baseline)}
    if digests[canary] and digests[canary] == digests[baseline]:
        notes.append(f"the canary and the baseline have the same system (snapshot {str(digests[canary])[:19]}): "
                     "telemetry is matched by commit SHA only, so spans naming only gating.snapshot count on neither "
                     "side")
    else:
        for name, sha in (("canary", canary), ("baseline", baseline)):
            if digests[sha]:
                ids[sha].append(str(digests[sha]))
            else:
                why = (unknown or {}).get(sha) or "no valid gating.yml there"
                notes.append(f"the {name}'s snapshot is not known ({why}): its telemetry is matched by commit SHA only")
    return ids[canary], ids[baseline], notes


def analyze(source: RollupSource, repo: str, canary: Sequence[str], baseline: Sequence[str], since: int,
            until: int, policy: Policy | None = None, notes: Sequence[str] = ()) -> Analysis:
    """Compare the canary's window [since, until) (unix minutes) with the baseline's; each side is
    named by its ids (commit SHA first, then its snapshot digest: see `sides`)."""
    policy = policy or Policy()
    policy.check()
    if until <= since:
        raise CanaryError(f"the window is empty: since {iso(since)} is not before until {iso(until)}")
    canary, baseline = tuple(s for s in canary if s), tuple(s for s in baseline if s)
    if not canary or not baseline:
        raise CanaryError("name both systems: the canary's and the baseline's commit SHA (or snapshot digest)")
    if set(canary) & set(baseline):
        raise CanaryError(f"the canary and the baseline are the same system ({', '.join(sorted(set(canary) & set(baseline)))})")
    c = read_side(source, repo, canary, since, until)
    b = read_side(source, repo, baseline, since, until)
    errors, needed = error_checks(c, b, policy)
    checks = tuple(errors + latency_checks(c, b, policy) + usage_checks(c, b, policy) + feedback_check(c, b, policy))
    failed = [x for x in checks if x.verdict == FAIL]
    waiting = [x for x in checks if x.verdict == WAIT]
    if failed:
        verdict, reason = FAIL, "; ".join(x.reason for x in failed)
    elif waiting:
        verdict, reason = WAIT, "not enough traffic yet: " + "; ".join(x.reason for x in waiting)
    else:
        verdict, reason = PASS, (f"no regression in {len(checks)} comparisons over {until - since} minutes "
                                 f"({c.requests:,} canary and {b.requests:,} baseline requests)")
    return Analysis(repo, canary, baseline, since, until, verdict, reason, checks, needed, (c.requests, b.requests),
                    policy, tuple(notes))
