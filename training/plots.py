"""Confusion-matrix and learning-curve figures, written atomically as PNG."""

import io
import os

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

from emnist.files import atomic_write


def save_figure(fig, path: str | os.PathLike) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, buffer.getvalue())


def plot_confusion(confusion: np.ndarray, class_names: list[str], path, title: str) -> None:
    """Row-normalised confusion matrix on a log colour scale, so rare confusions stay visible."""
    rows = confusion.sum(axis=1, keepdims=True)
    rates = confusion / np.maximum(rows, 1)
    n = len(class_names)
    size = max(6.0, n * 0.22)
    fig, ax = plt.subplots(figsize=(size, size))
    shown = np.where(rates > 0, rates, np.nan)
    image = ax.imshow(shown, cmap="viridis", norm=matplotlib.colors.LogNorm(vmin=1e-4, vmax=1))
    ax.set_xticks(range(n), class_names, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    save_figure(fig, path)


def plot_learning_curves(history: list[dict], path, title: str) -> None:
    """Training and validation loss and accuracy per epoch, from a checkpoint's history."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], marker="o", label="validation")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend()
    acc_ax.plot(epochs, [100 * h["train_acc"] for h in history], marker="o", label="train")
    acc_ax.plot(epochs, [100 * h["val_acc"] for h in history], marker="o", label="validation")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("top-1 accuracy (%)")
    acc_ax.legend()
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    save_figure(fig, path)
