"""What a sweep's members say together (plain data for report.json, Markdown for report.md).

- settings: members that differ only in `train.seed`, with their final zero-shot top-1 over seeds
  (mean, 95 % intervals), how many diverged and how many ended at chance level ("failed");
- differences: every pair of settings that differ in one axis, mean(top-1) difference with its
  intervals (`launcher.stats`), paired by seed when both have the same seeds, and in words whether
  it can be told from the spread between seeds;
- a grid: with exactly two axes (learning rate x warm-up), failed fraction and mean top-1 per cell;
- the probe: each setting's gap to the linear probe and the share of the first setting's gap it closes.

An axis is a set of override keys that change together across settings (`captions.recipe=mixed`
with the mixed captions' own shard and cache folders is one axis, named by its first key).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from launcher.stats import Interval, difference, mean_interval, ratio_interval

CHANCE_FACTOR = 2.0
"""A finished member whose final top-1 is below CHANCE_FACTOR x chance (100 / classes %) collapsed: it counts as failed."""
NAMES = {"train.warmup_steps": ("warm-up", "warm-up {}"), "train.lr": ("lr", "lr {}"), "train.loss": ("loss", "{} loss"),
         "captions.recipe": ("captions", "{} captions")}
"""Key → (axis title, how a value reads) in the report's words; other keys read `key=value`."""
SEED = "train.seed"


@dataclass
class Setting:
    """The members of one setting (same overrides but the seed)."""

    values: dict[str, str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    @property
    def top1(self) -> dict[str, float]:
        """Seed → final top-1 of the members that finished."""
        return {seed_of(r): float(r["final_top1"]) for r in self.rows if r.get("final_top1") is not None}


def _split(overrides: Sequence[str]) -> dict[str, str]:
    return dict(o.split("=", 1) for o in overrides if "=" in o)


def seed_of(row: dict[str, Any]) -> str:
    """The member's seed: its train.seed override, else the seed of its config, else its name."""
    return str(_split(row.get("overrides", [])).get(SEED, row.get("seed") if row.get("seed") is not None else row["member"]))


def collapsed(row: dict[str, Any]) -> bool:
    """Finished at chance level: final top-1 below CHANCE_FACTOR x chance."""
    classes, top1 = row.get("num_classes"), row.get("final_top1")
    if not classes or top1 is None:
        return False
    return float(top1) < CHANCE_FACTOR * 100.0 / float(classes)


def settings(rows: list[dict[str, Any]]) -> list[Setting]:
    """The members grouped by their overrides without the seed, in the sweep's order."""
    groups: dict[tuple[tuple[str, str], ...], Setting] = {}
    for r in rows:
        values = {k: v for k, v in _split(r.get("overrides", [])).items() if k != SEED}
        groups.setdefault(tuple(values.items()), Setting(values)).rows.append(r)
    found = list(groups.values())
    varying = axes(found)
    for s in found:
        s.label = ", ".join(name(axis[0], s.values.get(axis[0])) for axis in varying) or "every member"
    return found


def axes(found: list[Setting]) -> list[list[str]]:
    """The keys that vary across settings, grouped into axes: keys whose values change together."""
    keys = list(dict.fromkeys(k for s in found for k in s.values))
    groups: dict[tuple[int, ...], list[str]] = {}
    for key in keys:
        values = [s.values.get(key) for s in found]
        pattern = tuple(values.index(v) for v in values)
        if any(pattern):
            groups.setdefault(pattern, []).append(key)
    return [sorted(g, key=lambda k: [k in s.values for s in found].count(False)) for g in groups.values()]


def name(key: str, value: str | None) -> str:
    """`train.warmup_steps`, `16` → `warm-up 16`."""
    shown = "(job default)" if value is None else value
    return NAMES[key][1].format(shown) if key in NAMES else f"{key.rsplit('.', 1)[-1]}={shown}"


def title(key: str) -> str:
    """`train.warmup_steps` → `warm-up`."""
    return NAMES[key][0] if key in NAMES else key.rsplit(".", 1)[-1]


# ---------------------------------------------------------------- numbers


def _r3(pair: tuple[float, float] | None) -> list[float] | None:
    return None if pair is None else [round(pair[0], 3), round(pair[1], 3)]


def _interval(iv: Interval) -> dict[str, Any]:
    return {"estimate": round(iv.estimate, 3) if math.isfinite(iv.estimate) else None, "n": iv.n, "paired": iv.paired, "ci95_bootstrap": _r3(iv.boot),
            "ci95_t": _r3(iv.t), "told_apart": iv.excludes_zero}


def summary(s: Setting) -> dict[str, Any]:
    """A setting's row: members, outcomes, failed fraction, final top-1 over seeds with its intervals."""
    results = [r for r in s.rows if r.get("outcome") in ("finished", "diverged")]
    diverged = sum(r["outcome"] == "diverged" for r in results)
    chance = sum(collapsed(r) for r in results)
    top1 = list(s.top1.values())
    iv = mean_interval(top1)
    std = (sum((v - iv.estimate) ** 2 for v in top1) / (len(top1) - 1)) ** 0.5 if len(top1) > 1 else None
    return {"setting": s.label, "overrides": [f"{k}={v}" for k, v in s.values.items()], "members": len(s.rows),
            "results": len(results), "diverged": diverged, "at_chance": chance,
            "failed_fraction": round((diverged + chance) / len(results), 3) if results else None,
            "top1": _interval(iv) if top1 else None, "top1_std": None if std is None else round(std, 3),
            "seeds": sorted(s.top1)}


def compare(a: Setting, b: Setting, context: str = "", axis: str = "") -> dict[str, Any]:
    """mean top-1 of a minus b (paired by seed when both have the same seeds), led by the higher, in words.

    With `axis` the words name each setting by that axis only, after the `context` the two share.
    """
    va, vb = a.top1, b.top1
    paired = set(va) == set(vb) and len(va) >= 2
    seeds = sorted(va)
    iv = difference([va[k] for k in seeds], [vb[k] for k in seeds], True) if paired else difference(list(va.values()), list(vb.values()), False)
    if iv.estimate < 0:
        a, b, va, vb, iv = b, a, vb, va, iv.flipped()
    how = f"paired over {iv.n} seeds" if paired else f"unpaired, {len(va)} and {len(vb)} seeds"
    missing = len(a.rows) + len(b.rows) - len(va) - len(vb)
    how += f", {missing} member(s) without a final top-1 left out" if missing else ""
    lead = f"at {context}: " if context else ""
    la, lb = (name(axis, a.values.get(axis)), name(axis, b.values.get(axis))) if axis else (a.label, b.label)
    if iv.boot is None or iv.t is None:
        text = f"{lead}{la} and {lb}: too few seeds for an interval ({len(va)} and {len(vb)} with a final top-1)"
    else:
        ci = f"95 % CI {_p(iv.boot[0])} to {_p(iv.boot[1])}, {how}; t-interval {_p(iv.t[0])} to {_p(iv.t[1])}"
        if iv.excludes_zero:
            text = f"{lead}{la} beats {lb} by {_p(iv.estimate)} points ({ci})"
        else:
            where = "the CI includes 0" if iv.boot[0] <= 0 <= iv.boot[1] else "the t-interval includes 0"
            text = f"{lead}{la} and {lb} cannot be told apart: {la} by {_p(iv.estimate)} points ({ci}; {where})"
    return {"higher": a.label, "lower": b.label, "context": context, **_interval(iv), "text": text}


def differences(found: list[Setting]) -> list[dict[str, Any]]:
    """Every pair of settings that differ in exactly one axis, axis by axis, grouped by what else they share."""
    out = []
    groups = axes(found)
    for axis in groups:
        others = [g for g in groups if g is not axis]
        found_here = []
        for i, a in enumerate(found):
            for b in found[i + 1:]:
                if any(a.values.get(k) != b.values.get(k) for k in axis) and all(
                        a.values.get(k) == b.values.get(k) for g in others for k in g):
                    context = ", ".join(name(g[0], a.values.get(g[0])) for g in others)
                    found_here.append({"axis": axis[0], **compare(a, b, context, axis[0])})
        contexts = list(dict.fromkeys(d["context"] for d in found_here))
        out += sorted(found_here, key=lambda d: contexts.index(d["context"]))
    return out


def grid(found: list[Setting], rows_axis: list[str], cols_axis: list[str]) -> dict[str, Any]:
    """Failed fraction and mean top-1 per (row value, column value) cell of two axes."""
    r, c = rows_axis[0], cols_axis[0]
    row_values = list(dict.fromkeys(s.values.get(r) for s in found))
    col_values = list(dict.fromkeys(s.values.get(c) for s in found))
    cells = []
    for s in found:
        row = summary(s)
        cells.append({"row": s.values.get(r), "col": s.values.get(c), "results": row["results"],
                      "failed": row["diverged"] + row["at_chance"], "diverged": row["diverged"], "at_chance": row["at_chance"],
                      "failed_fraction": row["failed_fraction"], "mean_top1": row["top1"]["estimate"] if row["top1"] else None,
                      "finished_with_top1": len(s.top1)})
    return {"rows": r, "cols": c, "row_values": row_values, "col_values": col_values, "cells": cells}


def _mean(s: Setting) -> float:
    return sum(s.top1.values()) / len(s.top1)


def probe_gap(found: list[Setting], probe_top1: float) -> dict[str, Any] | None:
    """Each setting's gap to the probe and the share of the first setting's gap it closes; which closes most."""
    ranked = [s for s in found if len(s.top1) >= 2]
    if not ranked:
        return None
    base = ranked[0]
    rows: list[dict[str, Any]] = []
    for s in ranked:
        iv = mean_interval(list(s.top1.values()))
        gap = {"estimate": round(probe_top1 - iv.estimate, 3),
               "ci95_bootstrap": [round(probe_top1 - iv.boot[1], 3), round(probe_top1 - iv.boot[0], 3)] if iv.boot else None}
        share: float | None = None
        share_ci: tuple[float, float] | None = None
        if set(s.top1) == set(base.top1):  # paired by seed: a bootstrap of the share itself
            seeds = sorted(s.top1)
            share, share_ci = ratio_interval([s.top1[k] for k in seeds], [base.top1[k] for k in seeds], probe_top1)
        elif probe_top1 > _mean(base):
            share = (iv.estimate - _mean(base)) / (probe_top1 - _mean(base))
        share = share if share is not None and math.isfinite(share) else None
        rows.append({"setting": s.label, "gap": gap, "share_closed": None if share is None else round(share, 3),
                     "share_closed_ci95": [round(share_ci[0], 3), round(share_ci[1], 3)] if share_ci and share is not None else None})
    order = sorted(ranked, key=lambda s: -_mean(s))
    best = order[0]
    top = next(r for r in rows if r["setting"] == best.label)
    ci = top["gap"]["ci95_bootstrap"]
    text = (f"{best.label} closes most of the gap to the probe ({probe_top1:.2f}): {top['gap']['estimate']:.2f} points below it"
            + (f" (95 % CI {ci[0]:.2f} to {ci[1]:.2f})" if ci else ""))
    if best is not base and top["share_closed"] is not None:
        sci = top["share_closed_ci95"]
        text += (f", {100 * top['share_closed']:.0f} % of the gap of {base.label} closed"
                 + (f" (95 % CI {100 * sci[0]:.0f} to {100 * sci[1]:.0f} %)" if sci else ""))
    others = order[1:2] + ([base] if base is not best and all(o is not base for o in order[1:2]) else [])
    versus = [compare(best, other)["text"] for other in others]
    return {"probe_top1": probe_top1, "baseline": base.label, "best": best.label, "rows": rows, "text": text, "versus": versus}


def analyse(rows: list[dict[str, Any]], probe_top1: float | None = None) -> dict[str, Any]:
    """Everything above for a sweep's member rows (`launcher.report.member_summary`)."""
    found = settings(rows)
    groups = axes(found)
    return {
        "method": {"statistic": "difference of mean final zero-shot top-1 (points)", "interval": "95 %",
                   "bootstrap": "percentile, 10,000 resamples over seeds (of the paired differences when both settings have the "
                                "same seeds, else of each setting), numpy default_rng(0)",
                   "t": "paired t (n-1 df) or Welch's t", "told_apart": "neither interval contains 0",
                   "failed": f"diverged, or finished with a final top-1 below {CHANCE_FACTOR:g} x chance (100 / classes %)"},
        "settings": [summary(s) for s in found],
        "differences": differences(found),
        "grid": grid(found, groups[0], groups[1]) if len(groups) == 2 else None,
        "probe": probe_gap(found, float(probe_top1)) if probe_top1 is not None else None,
    }


def across(rows_a: list[dict[str, Any]], rows_b: list[dict[str, Any]], label_a: str, label_b: str) -> dict[str, Any]:
    """The same members in two sweeps (1 and 2 threads, two machines): member by member, and each sweep's verdicts."""
    by_b = {r["member"]: r for r in rows_b}
    both = [(r["member"], float(r["final_top1"]), float(by_b[r["member"]]["final_top1"])) for r in rows_a
            if r.get("final_top1") is not None and by_b.get(r["member"], {}).get("final_top1") is not None]
    outcomes = [r["member"] for r in rows_a if r["member"] in by_b and r.get("outcome") != by_b[r["member"]].get("outcome")]
    iv = difference([a for _, a, _ in both], [b for _, _, b in both], True) if both else None

    def verdicts(rows: list[dict[str, Any]]) -> dict[tuple[frozenset[str], str], dict[str, Any]]:
        return {(frozenset((d["higher"], d["lower"])), d["context"]): d for d in differences(settings(rows))}
    va, vb = verdicts(rows_a), verdicts(rows_b)
    agree = [{"a": va[k]["text"], "b": vb[k]["text"],
              "same": va[k]["told_apart"] == vb[k]["told_apart"] and (not va[k]["told_apart"] or va[k]["higher"] == vb[k]["higher"])}
             for k in va if k in vb]
    return {"a": label_a, "b": label_b, "members": [{"member": m, "a": a, "b": b, "difference": round(a - b, 4)} for m, a, b in both],
            "identical": sum(a == b for _, a, b in both), "largest": max((abs(a - b) for _, a, b in both), default=None),
            "outcome_differs": outcomes, "difference": _interval(iv) if iv else None, "verdicts": agree}


def markdown_across(data: dict[str, Any]) -> str:
    """The comparison of two sweeps as a Markdown page."""
    a, b, d = data["a"], data["b"], data["difference"]
    lines = [f"# {a} against {b}", "", f"{len(data['members'])} members with a final top-1 in both: {data['identical']} identical, "
             f"largest difference {_f(data['largest'])} points"
             + (f"; other outcome: {', '.join(data['outcome_differs'])}" if data["outcome_differs"] else "") + "."]
    if d:
        lines.append(f"Mean difference ({a} - {b}): {d['estimate']:.2f} points (95 % CI {_ci(d['ci95_bootstrap'])}, paired over "
                     f"members; t-interval {_ci(d['ci95_t'])}).")
    lines += ["", f"| member | {a} | {b} | difference |", "|---|---|---|---|"]
    lines += [f"| {m['member']} | {_f(m['a'])} | {_f(m['b'])} | {m['difference']:+.2f} |" for m in data["members"]]
    if data["verdicts"]:
        lines += ["", "The verdicts of each sweep:", "", f"| {a} | {b} | same verdict |", "|---|---|---|"]
        lines += [f"| {v['a']} | {v['b']} | {'yes' if v['same'] else '**no**'} |" for v in data["verdicts"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- Markdown


def _p(v: float) -> str:
    """Two decimals, never -0.00."""
    return f"{round(v, 2) + 0.0:.2f}"


def _f(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def _ci(pair: Sequence[float] | None) -> str:
    return "-" if not pair else f"{pair[0]:.2f} to {pair[1]:.2f}"


def markdown(analysis: dict[str, Any]) -> list[str]:
    """report.md's lines for the analysis (empty when every setting has a single member)."""
    rows = analysis["settings"]
    if not any(r["members"] > 1 for r in rows):
        return []
    lines = ["", "Settings over seeds: final zero-shot top-1, mean with 95 % intervals over seeds (bootstrap; t); failed: "
             f"diverged, or finished below {CHANCE_FACTOR:g} x chance.", "",
             "| setting | members | diverged | at chance | failed | top-1 mean ± std | 95 % CI (bootstrap) | 95 % CI (t) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        top = r["top1"] or {}
        failed = "-" if r["failed_fraction"] is None else f"{r['diverged'] + r['at_chance']}/{r['results']}"
        lines.append(f"| {r['setting']} | {r['members']} | {r['diverged']} | {r['at_chance']} | {failed} | "
                     f"{_f(top.get('estimate'))} ± {_f(r['top1_std'])} | {_ci(top.get('ci95_bootstrap'))} | {_ci(top.get('ci95_t'))} |")
    if analysis["differences"]:
        lines += ["", "Differences of mean final top-1, one axis at a time (told apart from the spread between seeds "
                  "when neither 95 % interval contains 0):", ""]
        lines += [f"- {d['text']}" for d in analysis["differences"]]
    g = analysis["grid"]
    if g:
        cells = {(c["row"], c["col"]): c for c in g["cells"]}
        lines += ["", f"Grid: failed members / members with a result · mean final top-1 of the finished ones "
                  f"({title(g['rows'])} x {title(g['cols'])}):", "",
                  "| | " + " | ".join(name(g["cols"], v) for v in g["col_values"]) + " |",
                  "|---|" + "---|" * len(g["col_values"])]
        for rv in g["row_values"]:
            texts = []
            for cv in g["col_values"]:
                c = cells.get((rv, cv))
                texts.append("-" if c is None else f"{c['failed']}/{c['results']} · {_f(c['mean_top1'])}")
            lines.append(f"| {name(g['rows'], rv)} | " + " | ".join(texts) + " |")
    p = analysis["probe"]
    if p:
        lines += ["", f"Beside the linear probe ({p['probe_top1']:.2f} top-1, the same frozen features):", "",
                  f"| setting | gap to the probe | 95 % CI | share of the gap of {p['baseline']} closed | 95 % CI |",
                  "|---|---|---|---|---|"]
        for r in p["rows"]:
            share = r["share_closed_ci95"]
            lines.append(f"| {r['setting']} | {_f(r['gap']['estimate'])} | {_ci(r['gap']['ci95_bootstrap'])} | "
                         + ("-" if r["share_closed"] is None else f"{100 * r['share_closed']:.0f} %") + " | "
                         + ("-" if not share else f"{100 * share[0]:.0f} to {100 * share[1]:.0f} %") + " |")
        lines += ["", f"{p['text']}."] + [f"- {v}" for v in p["versus"]]
    return lines


__all__ = ["CHANCE_FACTOR", "Setting", "across", "analyse", "axes", "collapsed", "compare", "differences", "grid", "markdown", "markdown_across", "name",
           "probe_gap", "seed_of", "settings", "title"]
