"""Inline SVG charts: pure functions of numbers that return markup (no JavaScript, no images).

Every chart says its numbers twice: as visible text beside each mark and as `data-*` attributes
(what the tests compare with the JSON report); a `<title>` names the chart for screen readers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

from gating.evals.stats import percentile

Fmt = Callable[[float | None], str]
W = 640
ROW = 26
LABEL = 190
PAD = 12


def _attr(v: float | None) -> str:
    return "" if v is None else repr(float(v))


@dataclass(frozen=True)
class Delta:
    metric: str
    delta: float | None
    low: float | None
    high: float | None
    status: str
    text: str  # the formatted delta


def delta_chart(rows: Sequence[Delta], title: str) -> Markup:
    """Each metric's delta (head − base) as a dot on a shared axis around zero, with its interval as a
    bar; a dot left of zero is worse for scores."""
    rows = [r for r in rows if r.delta is not None]
    if not rows:
        return Markup("")
    extent = max(max(abs(x) for r in rows for x in (r.delta, r.low, r.high) if x is not None), 0.05)
    plot = W - LABEL - 2 * PAD - 90
    zero = LABEL + PAD + plot / 2

    def x(v: float) -> float:
        return zero + v / extent * plot / 2

    h = ROW * len(rows) + 30
    out = [f'<svg class="chart deltas" role="img" viewBox="0 0 {W} {h}" width="100%" '
           f'aria-labelledby="deltas-title"><title id="deltas-title">{escape(title)}</title>',
           f'<line class="axis" x1="{zero:.1f}" y1="4" x2="{zero:.1f}" y2="{h - 22}"/>',
           f'<text class="tick" x="{zero:.1f}" y="{h - 6}" text-anchor="middle">0</text>',
           f'<text class="tick" x="{x(-extent):.1f}" y="{h - 6}" text-anchor="start">−{extent:.3g}</text>',
           f'<text class="tick" x="{x(extent):.1f}" y="{h - 6}" text-anchor="end">+{extent:.3g}</text>']
    for i, r in enumerate(rows):
        y = 16 + i * ROW
        assert r.delta is not None
        out.append(f'<g class="delta {escape(r.status)}" data-metric="{escape(r.metric)}" '
                   f'data-delta="{_attr(r.delta)}" data-low="{_attr(r.low)}" data-high="{_attr(r.high)}">')
        out.append(f'<text class="label" x="{LABEL}" y="{y + 4}" text-anchor="end">{escape(r.metric)}</text>')
        if r.low is not None and r.high is not None:
            out.append(f'<line class="interval" x1="{x(r.low):.1f}" y1="{y}" x2="{x(r.high):.1f}" y2="{y}"/>')
        out.append(f'<circle class="dot" cx="{x(r.delta):.1f}" cy="{y}" r="5"/>')
        out.append(f'<text class="value" x="{W - PAD}" y="{y + 4}" text-anchor="end">{escape(r.text)}</text></g>')
    out.append("</svg>")
    return Markup("".join(out))


def distribution_chart(series: Sequence[tuple[str, Sequence[float]]], title: str, fmt: Fmt, cls: str) -> Markup:
    """One strip per series (base, head): every case as a tick, the p50 and p95 marked and written."""
    series = [(name, [v for v in vals if v is not None]) for name, vals in series]
    series = [(name, vals) for name, vals in series if vals]
    if not series:
        return Markup("")
    top = max(max(v) for _n, v in series) or 1.0
    plot = W - 90 - 2 * PAD - 200

    def x(v: float) -> float:
        return 90 + PAD + v / top * plot

    h = 36 * len(series) + 24
    tid = f"{cls}-title"
    out = [f'<svg class="chart distribution {cls}" role="img" viewBox="0 0 {W} {h}" width="100%" '
           f'aria-labelledby="{tid}"><title id="{tid}">{escape(title)}</title>']
    for i, (name, vals) in enumerate(series):
        y = 18 + i * 36
        p50, p95 = percentile(vals, 50), percentile(vals, 95)
        out.append(f'<g class="series" data-series="{escape(name)}" data-p50="{_attr(p50)}" data-p95="{_attr(p95)}" '
                   f'data-n="{len(vals)}">')
        out.append(f'<text class="label" x="90" y="{y + 4}" text-anchor="end">{escape(name)}</text>')
        out.append(f'<line class="axis" x1="{x(0):.1f}" y1="{y}" x2="{x(top):.1f}" y2="{y}"/>')
        out += [f'<line class="case" x1="{x(v):.1f}" y1="{y - 7}" x2="{x(v):.1f}" y2="{y + 7}"/>' for v in vals]
        for label, v in (("p50", p50), ("p95", p95)):
            if v is not None:
                out.append(f'<path class="mark {label}" d="M{x(v):.1f} {y - 12}l-4 -6h8z"/>')
        out.append(f'<text class="value" x="{W - PAD}" y="{y + 4}" text-anchor="end">'
                   f'p50 {escape(fmt(p50))} · p95 {escape(fmt(p95))}</text></g>')
    out.append(f'<text class="tick" x="{x(0):.1f}" y="{h - 4}">0</text>'
               f'<text class="tick" x="{x(top):.1f}" y="{h - 4}" text-anchor="end">{escape(fmt(top))}</text></svg>')
    return Markup("".join(out))


@dataclass(frozen=True)
class Point:
    label: str  # e.g. "#12 · 3f2a1c0"
    value: float
    current: bool = False


def trend_chart(metric: str, points: Sequence[Point], fmt: Fmt) -> Markup:
    """A metric across the last merges (oldest left), this change's value marked."""
    if not points:
        return Markup("")
    lo, hi = min(p.value for p in points), max(p.value for p in points)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 if lo else -0.5, hi + 0.5 if hi else 0.5
    h, left, right, top, bottom = 150, 70, W - PAD, 14, 110
    step = (right - left) / max(len(points) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + i * step, bottom - (v - lo) / (hi - lo) * (bottom - top)

    tid = "trend-" + "".join(c if c.isalnum() else "-" for c in metric)
    coords = [xy(i, p.value) for i, p in enumerate(points)]
    out = [f'<svg class="chart trend" role="img" viewBox="0 0 {W} {h}" width="100%" data-metric="{escape(metric)}" '
           f'aria-labelledby="{tid}"><title id="{tid}">{escape(metric)} across the last {len(points)} '
           f'merges</title>',
           f'<text class="tick" x="{left - 6}" y="{top + 4}" text-anchor="end">{escape(fmt(hi))}</text>',
           f'<text class="tick" x="{left - 6}" y="{bottom + 4}" text-anchor="end">{escape(fmt(lo))}</text>',
           f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>']
    if len(coords) > 1:
        out.append('<polyline class="line" points="' + " ".join(f"{a:.1f},{b:.1f}" for a, b in coords) + '"/>')
    for (a, b), p in zip(coords, points, strict=True):
        cls = "point current" if p.current else "point"
        out.append(f'<g class="{cls}" data-value="{_attr(p.value)}" data-label="{escape(p.label)}">'
                   f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{5 if p.current else 3.5}"><title>{escape(p.label)}: '
                   f'{escape(fmt(p.value))}</title></circle></g>')
    last = points[-1]
    out.append(f'<text class="value" x="{right}" y="{h - 8}" text-anchor="end">{escape(last.label)}: '
               f'{escape(fmt(last.value))}</text></svg>')
    return Markup("".join(out))
