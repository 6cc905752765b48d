"""Where training runs: device choice, CPU determinism, CUDA speed settings, batch gathering."""

from __future__ import annotations

import contextlib

import torch

from ichbench.train.data import SliceArrays, windowed


def select_device(device=None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def device_mode(device: torch.device):
    """CPU: deterministic algorithms (restored afterwards). CUDA: cuDNN autotuning for speed."""
    if device.type == "cpu":
        prev = torch.are_deterministic_algorithms_enabled()
        prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
    else:
        prev = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = prev


def numerics(device: torch.device) -> dict:
    """What a CPU result's last bits depend on besides the seed (docs/architecture.md,
    "Determinism"): the intra-op thread count and the vector ISA ATen dispatched to."""
    out = {"cpu_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def autocast_for(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def prepare_model(model: torch.nn.Module, device: torch.device, compile_: bool) -> torch.nn.Module:
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        if compile_:
            model.compile()  # in place: state_dict keys stay those of the plain module
    return model


def gather(t: torch.Tensor, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rows `idx` of `t`, on `device` (indexing where `t` lives: host or, if it fits, the GPU)."""
    return t[idx.to(t.device)].to(device, non_blocking=True)


def batch_images(arrays: SliceArrays, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The input channels of rows `idx` on `device`, windowed (B, C, S, S): one slice in the paper's
    window as always, or (`arrays.channels`) each row's neighbours gathered by one index, where the
    arrays live, and every window applied at once."""
    ch = arrays.channels
    if ch is None:
        return windowed(gather(arrays.images, idx, device))
    return ch.window(gather(arrays.images, ch.rows(idx), device))


def images_of(arrays: SliceArrays, idx: torch.Tensor, device: torch.device) -> torch.Tensor:
    return _layout(batch_images(arrays, idx, device))


def model_input(images: torch.Tensor, device: torch.device | None = None, channels=None) -> torch.Tensor:
    """(B, S, S) — or with `channels` (B, K, S, S) — int16 HU (moved to `device` if given) -> the
    windowed (B, C, S, S) input, channels_last on CUDA."""
    images = images if device is None else images.to(device, non_blocking=True)
    return _layout(windowed(images) if channels is None else channels.window(images))


def _layout(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cuda" else x
