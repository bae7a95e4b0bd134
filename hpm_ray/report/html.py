"""Self-contained HTML reports: inline CSS and SVG charts, no scripts or CDN (users may be offline).

A :class:`Report` is built section by section (headings, text, tables, charts) and written as one file
that opens in any browser and can be logged to MLflow as an artifact.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
_W, _H = 720, 320
_M = dict(left=64, right=16, top=44, bottom=44)

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1000px;color:#222;padding:0 16px}
h1{font-size:24px;margin-bottom:4px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:16px;margin-top:20px}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px;display:block;overflow-x:auto;max-width:100%}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.ok{color:#2ca02c;font-weight:600}.bad{color:#d62728;font-weight:600}
svg{display:block;margin:8px 0 4px;background:#fff}.chart text{font-size:11px;fill:#333}.note{color:#666;font-size:12px}
"""


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not np.isfinite(lo) or not np.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 12) for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "-"
        a = abs(v)
        return f"{v:.4g}" if a == 0 or 1e-3 <= a < 1e5 else f"{v:.3e}"
    return str(v)


class _Axes:
    """Maps data coordinates to SVG pixels and draws the frame, ticks and labels."""

    def __init__(self, xs: np.ndarray, ys: np.ndarray, title: str, xlabel: str, ylabel: str, y0: bool = False):
        xs, ys = np.asarray(xs, float), np.asarray(ys, float)
        xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
        self.x0, self.x1 = (xs.min(), xs.max()) if xs.size else (0.0, 1.0)
        lo, hi = (ys.min(), ys.max()) if ys.size else (0.0, 1.0)
        if y0:
            lo = min(lo, 0.0)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
        self.y0, self.y1 = lo - pad, hi + pad
        if self.x1 == self.x0:
            self.x0, self.x1 = self.x0 - 0.5, self.x1 + 0.5
        self.parts: list[str] = []
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel

    def px(self, x):
        return _M["left"] + (np.asarray(x, float) - self.x0) / (self.x1 - self.x0) * (_W - _M["left"] - _M["right"])

    def py(self, y):
        return (
            _H - _M["bottom"] - (np.asarray(y, float) - self.y0) / (self.y1 - self.y0) * (_H - _M["top"] - _M["bottom"])
        )

    def path(self, x, y, color: str, width: float = 1.5, dash: str | None = None) -> None:
        ok = np.isfinite(np.asarray(y, float))
        pts = " ".join(f"{a:.1f},{b:.1f}" for a, b in zip(self.px(np.asarray(x)[ok]), self.py(np.asarray(y)[ok])))
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="{width}"{d} points="{pts}"/>')

    def band(self, x, lo, hi, color: str, opacity: float) -> None:
        top = [f"{a:.1f},{b:.1f}" for a, b in zip(self.px(x), self.py(hi))]
        bot = [f"{a:.1f},{b:.1f}" for a, b in zip(self.px(x)[::-1], self.py(lo)[::-1])]
        self.parts.append(
            f'<polygon fill="{color}" fill-opacity="{opacity}" stroke="none" points="{" ".join(top + bot)}"/>'
        )

    def dots(self, x, y, color: str, r: float = 3.0, hollow: bool = False) -> None:
        fill = "none" if hollow else color
        for a, b in zip(self.px(x), self.py(y)):
            if np.isfinite(b):
                self.parts.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="{r}" fill="{fill}" stroke="{color}"/>')

    def hline(self, y: float, color: str, label: str) -> None:
        yy = float(self.py(y))
        self.parts.append(
            f'<line x1="{_M["left"]}" x2="{_W - _M["right"]}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="{color}" stroke-dasharray="4 3"/>'
            f'<text x="{_W - _M["right"] - 4}" y="{yy - 4:.1f}" text-anchor="end" style="fill:{color}">{html.escape(label)}</text>'
        )

    def svg(self, legend: Sequence[tuple[str, str]] = (), x_labels: dict[float, str] | None = None) -> str:
        g = [
            f'<text x="{_W / 2}" y="16" text-anchor="middle" style="font-size:13px;font-weight:600">{html.escape(self.title)}</text>'
        ]
        left, b = _M["left"], _H - _M["bottom"]
        g.append(
            f'<line x1="{left}" y1="{_M["top"]}" x2="{left}" y2="{b}" stroke="#888"/><line x1="{left}" y1="{b}" x2="{_W - _M["right"]}" y2="{b}" stroke="#888"/>'
        )
        for t in _nice_ticks(self.y0, self.y1):
            y = float(self.py(t))
            g.append(
                f'<line x1="{left}" x2="{_W - _M["right"]}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>'
            )
        xt = x_labels.items() if x_labels else ((t, _fmt(t)) for t in _nice_ticks(self.x0, self.x1, 6))
        for t, lab in xt:
            x = float(self.px(t))
            g.append(f'<text x="{x:.1f}" y="{b + 16}" text-anchor="middle">{html.escape(str(lab))}</text>')
        g.append(f'<text x="{(left + _W) / 2}" y="{_H - 8}" text-anchor="middle">{html.escape(self.xlabel)}</text>')
        g.append(
            f'<text transform="translate(14,{(_H) / 2}) rotate(-90)" text-anchor="middle">{html.escape(self.ylabel)}</text>'
        )
        for i, (name, color) in enumerate(legend):
            x = left + 10 + (i % 4) * 150
            y = 32 + (i // 4) * 14  # legend rows sit between the title and the plot area
            g.append(
                f'<rect x="{x}" y="{y - 8}" width="10" height="10" fill="{color}"/><text x="{x + 14}" y="{y + 1}">{html.escape(name)}</text>'
            )
        body = "".join(g + self.parts)
        return f'<svg class="chart" viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" xmlns="http://www.w3.org/2000/svg">{body}</svg>'


class Report:
    """An HTML document assembled from sections; ``save`` writes one self-contained file."""

    def __init__(self, title: str, subtitle: str | None = None):
        self.title = title
        self._body: list[str] = [f"<h1>{html.escape(title)}</h1>"]
        if subtitle:
            self._body.append(f'<p class="sub">{html.escape(subtitle)}</p>')

    def heading(self, text: str, level: int = 2) -> Report:
        self._body.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def text(self, text: str, note: bool = False) -> Report:
        cls = ' class="note"' if note else ""
        self._body.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def table(
        self,
        rows: Sequence[dict] | object,
        columns: Sequence[str] | None = None,
        flags: dict[str, callable] | None = None,
    ) -> Report:
        """Rows of dicts (or a DataFrame); ``flags[col](value) -> bool`` marks a cell pass (green) / fail (red)."""
        if hasattr(rows, "to_dict"):
            rows = rows.to_dict(orient="records")
        rows = list(rows)
        columns = list(columns or (rows[0].keys() if rows else []))
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        out = []
        for r in rows:
            cells = []
            for c in columns:
                v = r.get(c, "")
                cls = ""
                if flags and c in flags and v != "" and v is not None:
                    cls = ' class="ok"' if flags[c](v) else ' class="bad"'
                cells.append(f"<td{cls}>{html.escape(_fmt(v))}</td>")
            out.append("<tr>" + "".join(cells) + "</tr>")
        self._body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(out)}</tbody></table>")
        return self

    def line_chart(
        self,
        series: dict[str, tuple[Sequence[float], Sequence[float]]],
        title: str,
        xlabel: str = "",
        ylabel: str = "",
        markers: bool = False,
        hlines: dict[str, float] | None = None,
        x_labels: dict[float, str] | None = None,
    ) -> Report:
        """One line (or dot series with ``markers``) per entry of ``series``: name -> (x, y)."""
        xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()] or [np.zeros(1)])
        ys = np.concatenate(
            [np.asarray(y, float) for _, y in series.values()] + [np.asarray(list((hlines or {}).values()), float)]
        )
        ax = _Axes(xs, ys, title, xlabel, ylabel)
        legend = []
        for i, (name, (x, y)) in enumerate(series.items()):
            color = PALETTE[i % len(PALETTE)]
            (ax.dots if markers else ax.path)(x, y, color)
            legend.append((name, color))
        for i, (label, v) in enumerate((hlines or {}).items()):
            ax.hline(v, "#555" if i == 0 else PALETTE[(i + 3) % len(PALETTE)], label)
        self._body.append(ax.svg(legend, x_labels))
        return self

    def bar_chart(
        self,
        categories: Sequence[str],
        values: dict[str, Sequence[float]],
        title: str,
        ylabel: str = "",
        hlines: dict[str, float] | None = None,
    ) -> Report:
        """Grouped bars: one group per category, one bar per entry of ``values``."""
        n_cat, n_ser = len(categories), max(len(values), 1)
        allv = np.concatenate(
            [np.asarray(v, float) for v in values.values()] + [np.asarray(list((hlines or {}).values()), float)]
        )
        ax = _Axes(np.array([-0.5, n_cat - 0.5]), allv, title, "", ylabel, y0=True)
        bw = 0.8 / n_ser
        legend = []
        for j, (name, vals) in enumerate(values.items()):
            color = PALETTE[j % len(PALETTE)]
            legend.append((name, color))
            for i, v in enumerate(vals):
                if not np.isfinite(v):
                    continue
                x_left = float(ax.px(i - 0.4 + j * bw))
                width = float(ax.px(i - 0.4 + (j + 1) * bw)) - x_left - 1
                y_top, y_zero = float(ax.py(max(v, 0))), float(ax.py(min(v, 0)))
                ax.parts.append(
                    f'<rect x="{x_left:.1f}" y="{y_top:.1f}" width="{width:.1f}" height="{max(y_zero - y_top, 0.5):.1f}" fill="{color}"><title>{html.escape(name)}: {_fmt(v)}</title></rect>'
                )
        for i, (label, v) in enumerate((hlines or {}).items()):
            ax.hline(v, "#555" if i == 0 else PALETTE[(i + 3) % len(PALETTE)], label)
        self._body.append(ax.svg(legend, {float(i): c for i, c in enumerate(categories)}))
        return self

    def fan_chart(
        self,
        x: Sequence[float],
        bands: Sequence[tuple[Sequence[float], Sequence[float], str]],
        center: Sequence[float] | None,
        actual: Sequence[float] | None,
        title: str,
        xlabel: str = "",
        ylabel: str = "",
        x_labels: dict[float, str] | None = None,
    ) -> Report:
        """Nested intervals (widest first) as shaded bands, with the median and the realised values."""
        x = np.asarray(x, float)
        ys = [np.asarray(v, float) for lo, hi, _ in bands for v in (lo, hi)]
        ys += [np.asarray(v, float) for v in (center, actual) if v is not None]
        ax = _Axes(x, np.concatenate(ys), title, xlabel, ylabel)
        legend = []
        for i, (lo, hi, label) in enumerate(bands):
            ax.band(x, np.asarray(lo, float), np.asarray(hi, float), PALETTE[0], 0.18 + 0.17 * i)
            legend.append((label, PALETTE[0]))
        if center is not None:
            ax.path(x, center, PALETTE[0], 1.2)
            legend.append(("median", PALETTE[0]))
        if actual is not None:
            ax.path(x, actual, "#222", 0.8)
            legend.append(("actual", "#222"))
        self._body.append(ax.svg(legend, x_labels))
        return self

    def html_fragment(self, fragment: str) -> Report:
        """Raw, trusted HTML produced by this package (e.g. a pre-rendered table)."""
        self._body.append(fragment)
        return self

    def to_html(self) -> str:
        return (
            f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(self._body)}</body></html>"
        )

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_html(), encoding="utf-8")
        return p
