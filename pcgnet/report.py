"""Printing metrics: the tables of ``pcgnet train`` / ``evaluate`` and JSON-safe values (one place for both)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def pct(x: Any) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def print_report(m: dict[str, Any], labels: Sequence[str], console=None, title: str = "evaluation") -> None:
    """A rich table of everything ``--json`` returns (values as percentages)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(highlight=False)
    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_row("weighted F1", pct(m["weighted_f1"]))
    t.add_row("accuracy", pct(m["accuracy"]))
    for name in labels:
        t.add_row(f"  F1 {name}", pct(m["per_class_f1"].get(name)))
    c2 = len(labels) ** 2
    t.add_row(f"shift accuracy ({c2} transition classes)", pct(m["shift_accuracy"]))
    t.add_row(f"shift weighted F1 ({c2} transition classes)", pct(m["shift_f1"]))
    t.add_row("utterances / shift pairs", f"{m['n_utterances']} / {m['n_pairs']}")
    console.print(t)
    b = m["binary_shift"]
    base = b["baseline_always_shift"]
    at = f", {b['rule']} rule, profile {b['profile']} (p >= {b['threshold']:.3f})" if b.get("rule") else ""
    bt = Table(title=f"binary shift detection{at} ({pct(b['shift_rate'])}% of pairs are shifts; reported "
                     f"expressions W-F1 {pct(b.get('reported_weighted_f1'))})")
    bt.add_column("metric")
    bt.add_column("model", justify="right")
    bt.add_column("always shift", justify="right")
    for key, name in (("precision", "precision"), ("recall", "recall"), ("f1", "F1"),
                      ("balanced_accuracy", "balanced accuracy"), ("auroc", "AUROC")):
        bt.add_row(name, pct(b[key]), pct(base[key]))
    console.print(bt)


def json_clean(x: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(x, dict):
        return {k: json_clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def print_aggregate(agg: dict[str, Any], labels: Sequence[str], console, title: str) -> None:
    """Mean ± std across seeds of the headline metrics."""
    from rich.table import Table

    mean, std = agg["mean"], agg["std"]

    def cell(path: tuple[str, ...]) -> str:
        mu, sd = mean, std
        for k in path:
            mu, sd = mu.get(k, {}), sd.get(k, {})
        return f"{pct(mu)} ± {pct(sd)}" if isinstance(mu, float) else "n/a"

    t = Table(title=title)
    t.add_column("metric")
    t.add_column(f"mean ± std ({agg['n_runs']} runs)", justify="right")
    t.add_column("always shift", justify="right")
    t.add_row("weighted F1", cell(("weighted_f1",)), "")
    t.add_row("accuracy", cell(("accuracy",)), "")
    for name in labels:
        t.add_row(f"  F1 {name}", cell(("per_class_f1", name)), "")
    t.add_row("shift accuracy (transitions)", cell(("shift_accuracy",)), "")
    t.add_row("shift weighted F1 (transitions)", cell(("shift_f1",)), "")
    for key, name in (("precision", "binary shift precision"), ("recall", "binary shift recall"),
                      ("f1", "binary shift F1"), ("balanced_accuracy", "binary shift balanced acc."),
                      ("auroc", "binary shift AUROC")):
        t.add_row(name, cell(("binary_shift", key)), cell(("binary_shift", "baseline_always_shift", key)))
    console.print(t)
