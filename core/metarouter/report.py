"""Training reports: the history as JSON and a loss/validation plot (matplotlib, Agg backend)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metarouter.training import TrainingResult

__all__ = ["write_training_report"]


def write_training_report(
    result: TrainingResult, directory: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``training.json`` (history, best step, time, settings) and ``training_curve.png``.

    Returns:
        The paths written, by kind.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    h = result.history
    report = {
        "best_step": result.best_step,
        "seconds": round(result.seconds, 1),
        "best_validation_regret": min(h["val_regret"]) if h.get("val_regret") else None,
        "adaptation_prior": (
            {
                "familiar": result.adaptation.familiar,
                "novel": result.adaptation.novel,
                "outcome_coupling": result.adaptation.coupling,
                "binary_share": result.adaptation.binary_share,
                "task_groups": result.adaptation.groups,
            }
            if result.adaptation is not None
            else None
        ),
        "history": h,
        **(extra or {}),
    }
    json_path = out / "training.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(h["step"], h["loss"], lw=0.8)
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot(h["step"], h["reward"], lw=0.8, label="sampled-arm utility")
    axes[1].plot(h["step"], h["quality_loss"], lw=0.8, label="quality loss (aux)")
    axes[1].plot(h["step"], h["alpha_loss"], lw=0.8, label="alpha loss (aux)")
    axes[1].set(title="training signals", xlabel="step")
    axes[1].legend(fontsize=7)
    axes[2].plot(h["val_step"], h["val_regret"], marker="o", ms=3, label="validation")
    if h.get("train_regret"):
        axes[2].plot(h["val_step"], h["train_regret"], marker=".", ms=3, label="training queries")
    axes[2].axvline(result.best_step, color="grey", ls="--", lw=0.8, label="kept weights")
    axes[2].set(title="utility regret (6 comparisons)", xlabel="step")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    png_path = out / "training_curve.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return {"json": json_path, "plot": png_path}
