"""The quality bars, in one place: what `gantool eval`, the demo's REPORT.md, the README and
docs/quality.md call a good run, each printed by `describe` / `verdict_line` the same way.

    judged = judge(scores)            # {"bar": {"thresholds": {...}, "met": {...}, "passed": bool}, "stretch": ...}
    verdict_line(BARS[0], judged)     # "quality bar: met (recognisability 89.2 % >= 85 %, ...)"
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Bar:
    """Thresholds on 10,000 samples. FID/floor must hold in every feature space; recall is relative to
    real held-out digits' recall under the same protocol (None: not part of this bar)."""

    name: str
    title: str
    meaning: str
    recognisability: float
    class_entropy: float
    fid_over_floor: float
    recall_over_real: float | None = None


BARS = (
    Bar("bar", "quality bar", "what the default recipe meets on every seed tried (issue 13): clear digits, all ten "
        "of them, a distribution near the data's", 0.85, 0.97, 10.0),
    Bar("stretch", "stretch goal", "where a better recipe should get (issue 16): cleaner digits, and the variety "
        "of real ones", 0.90, 0.99, 5.0, 0.8),
)
BY_NAME = {b.name: b for b in BARS}


def _checks(bar: Bar, s: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    """Each applicable metric of `bar` on scores `s`: (met, 'value op threshold')."""
    out: dict[str, tuple[bool, str]] = {}
    if "recognisability" in s:  # MNIST-shaped samples: the classifier's own scores
        r, e = s["recognisability"], s["class_entropy"]
        out["recognisability"] = (r >= bar.recognisability,
                                  f"recognisability {r:.1%} {'>=' if r >= bar.recognisability else '<'} "
                                  f"{bar.recognisability:.0%}")
        out["class_entropy"] = (e >= bar.class_entropy,
                                f"class entropy {e:.3f} {'>=' if e >= bar.class_entropy else '<'} {bar.class_entropy}")
    spaces = s.get("feature_spaces") or {"": s}
    worst_name, worst = max(((n, v["fid_over_floor"]) for n, v in spaces.items()), key=lambda t: t[1])
    where = f" ({worst_name})" if worst_name and len(spaces) > 1 else ""
    out["fid_over_floor"] = (worst <= bar.fid_over_floor,
                             f"FID/floor {worst:.1f}x{where} {'<=' if worst <= bar.fid_over_floor else '>'} "
                             f"{bar.fid_over_floor:g}x")
    if bar.recall_over_real is not None:
        real = s["real_vs_real"]["recall"]
        ratio = s["recall"] / real if real else 0.0
        out["recall_over_real"] = (ratio >= bar.recall_over_real,
                                   f"recall {ratio:.2f}x real's {'>=' if ratio >= bar.recall_over_real else '<'} "
                                   f"{bar.recall_over_real:g}x")
    return out


def judge(s: dict[str, Any]) -> dict[str, Any]:
    """Every bar on scores `s` (gantool.quality.metrics' dict): thresholds, per-metric met, passed, and
    the line that says so."""
    out = {}
    for bar in BARS:
        checks = _checks(bar, s)
        thresholds = {k: v for k, v in asdict(bar).items() if k in checks}
        out[bar.name] = {"title": bar.title, "thresholds": thresholds, "met": {k: ok for k, (ok, _) in checks.items()},
                         "passed": all(ok for ok, _ in checks.values()),
                         "line": verdict_line(bar, checks)}
    return out


def verdict_line(bar: Bar, checks: dict[str, tuple[bool, str]]) -> str:
    """'quality bar: met (a, b, c)' or 'stretch goal: not met: x; (met: a, b)'."""
    bad = [text for ok, text in checks.values() if not ok]
    good = [text for ok, text in checks.values() if ok]
    if not bad:
        return f"{bar.title}: met ({', '.join(good)})"
    return f"{bar.title}: not met: {', '.join(bad)}" + (f" (met: {', '.join(good)})" if good else "")


def describe(bar: Bar) -> str:
    """The bar's thresholds in words, as the README and docs quote them."""
    parts = [f"recognisability >= {bar.recognisability:.0%}", f"class entropy >= {bar.class_entropy}",
             f"FID <= {bar.fid_over_floor:g}x the real-vs-real floor in every feature space"]
    if bar.recall_over_real is not None:
        parts.append(f"recall >= {bar.recall_over_real:g}x real's")
    return f"{bar.title}: " + ", ".join(parts)
