"""Human-readable training report: Markdown with a training-curve plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def _plot_curves(curves: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_ndcg) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, curve in curves.items():
        epochs = [p["epoch"] for p in curve]
        ax_loss.plot(epochs, [p["loss"] for p in curve], label=name)
        points = [(p["epoch"], p["valid_ndcg@10"]) for p in curve if "valid_ndcg@10" in p]
        if points:
            ax_ndcg.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
    ax_loss.set(title="training loss (full-catalog cross-entropy)", xlabel="epoch", ylabel="loss")
    ax_ndcg.set(title="validation NDCG@10", xlabel="epoch", ylabel="NDCG@10")
    for ax in (ax_loss, ax_ndcg):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(name: str, m: dict[str, float]) -> str:
    keys = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "mrr@10", "recall@20", "ndcg@20")
    return f"| {name} | " + " | ".join(f"{m.get(k, float('nan')):.4f}" for k in keys) + " |"


def write_report(metrics: dict[str, Any], curves: dict[str, list[dict[str, float]]], out_dir: Path) -> Path:
    """Write ``report.md`` and ``training_curve.png`` into ``out_dir``."""
    _plot_curves(curves, out_dir / "training_curve.png")
    header = "| model | R@5 | N@5 | R@10 | N@10 | MRR@10 | R@20 | N@20 |\n|---|---|---|---|---|---|---|---|"
    lines = [
        f"# Training report: {metrics.get('model_version', '')}",
        "",
        f"Data: `{metrics['data']}` ({metrics['format']}), protocol **{metrics['protocol']}**: "
        f"{metrics['n_users']} users, {metrics['n_items']} items, {metrics['n_events']} events. "
        "Full-catalog ranking, each user's input history excluded; one held-out item per user.",
        "",
        "## Test split",
        "",
        header,
        _row("popular", metrics["baselines"]["popular"]["test"]),
    ]
    if "cooccurrence" in metrics["baselines"]:
        lines.append(_row("co-occurrence", metrics["baselines"]["cooccurrence"]["test"]))
    for arch, result in metrics.get("models", {}).items():
        lines.append(_row(f"{arch} (alone)", result["test"]))
    lines.append(_row(f"**served: {metrics['served']}**", metrics["test"]))
    lines += ["", "## Validation split (everything was chosen here)", "", header,
              _row("popular", metrics["baselines"]["popular"]["valid"])]
    if "cooccurrence" in metrics["baselines"]:
        lines.append(_row("co-occurrence", metrics["baselines"]["cooccurrence"]["valid"]))
    for arch, result in metrics.get("models", {}).items():
        lines.append(_row(f"{arch} (alone)", result["valid"]))
    lines.append(_row(f"**served: {metrics['served']}**", metrics["valid"]))
    seeds = metrics.get("seeds")
    if seeds and len(seeds.get("runs", [])) > 1:
        lines += ["", f"## Over {len(seeds['runs'])} seeds (the served model of each seed)", "",
                  "| split | metric | mean | ± s.e. | std | min | max |", "|---|---|---|---|---|---|---|"]
        for split, summary in (("test", seeds["summary"]), ("valid", seeds.get("valid_summary", {}))):
            for key, s in summary.items():
                lines.append(f"| {split} | {key} | {s['mean']:.4f} | {s.get('sem', float('nan')):.4f} | "
                             f"{s['std']:.4f} | {s['min']:.4f} | {s['max']:.4f} |")
        lines += ["", "| seed | arch | beta | valid NDCG@10 | test NDCG@10 |", "|---|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['arch']} | {r['beta']} | {r['valid']['ndcg@10']:.4f} | "
                  f"{r['test']['ndcg@10']:.4f} |" for r in seeds["runs"]]
    exported = (seeds or {}).get("exported")
    if exported:
        config = ", ".join(f"{k} {v}" for k, v in exported["config"].items() if k != "progress")
        lines += ["", f"**Exported** (the best seed on validation): seed {exported['seed']}, {exported['arch']}, "
                  f"beta {exported['beta']}; configuration: {config}."]
    lines += [
        "",
        "## Choices",
        "",
        f"- co-occurrence: `{metrics['baselines'].get('cooccurrence', {}).get('config')}`",
        f"- blend weight beta (0 = model only, 1 = co-occurrence only): {metrics.get('blend', {}).get('beta')}",
        f"- training time: {metrics['train_seconds']:.0f} s",
        "",
        "![training curves](training_curve.png)",
        "",
    ]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), "utf-8")
    return path
