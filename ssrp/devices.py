"""Which device a stage runs on: one rule for every stage, the trainer and evaluation."""

from __future__ import annotations


def resolve_device(name: str = "auto"):
    """``auto``: CUDA when a device is visible, else the CPU; ``cuda`` or ``cuda:N`` without CUDA is a clear
    ValueError (never a silent fall-back to the CPU)."""
    import torch  # heavy: imported by the stages that run a model, not by their configs

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here; use cpu or auto")
    return device
