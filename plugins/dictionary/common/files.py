"""Checks of a user's activation file that read only its header (no torch import), so a
bad ``activations=PATH`` is refused when the config is validated, before a run starts."""

from __future__ import annotations

from pathlib import Path

from mi_ideas.errors import UsageError

__all__ = ["FIX", "check_activations_header"]

FIX = ("Save your rows with safetensors.torch.save_file({'activations': x}, PATH), x a float "
       "tensor of shape (n_rows, d), one row per token.")

_FLOATS = {"F16", "BF16", "F32", "F64"}


def check_activations_header(path: str) -> tuple[int, int]:
    """``(n_rows, d)`` of the tensor ``activations`` in a safetensors file, from its header;
    a UsageError naming what is wrong (no file, not safetensors, no such tensor, wrong shape
    or dtype) and how to fix it."""
    from safetensors import SafetensorError, safe_open

    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"activations={path!r}: no such file. Give the path of a safetensors "
                         f"file holding your activations. {FIX}")
    try:
        with safe_open(str(p), framework="numpy") as f:
            keys = list(f.keys())
            if "activations" not in keys:
                raise UsageError(
                    f"activations={path!r} has no tensor named 'activations' (it holds "
                    f"{keys[:8]}). Rename the tensor of rows to 'activations'. {FIX}")
            sl = f.get_slice("activations")
            shape, dtype = tuple(sl.get_shape()), sl.get_dtype()
    except SafetensorError as e:
        raise UsageError(f"activations={path!r} is not a readable safetensors file ({e}). "
                         f"{FIX}") from None
    if len(shape) != 2 or shape[0] < 2 or shape[1] < 1:
        raise UsageError(f"activations={path!r}: the tensor 'activations' has shape {shape}; "
                         f"it must be (n_rows, d) with at least 2 rows. Flatten batch and "
                         f"position dimensions first (x.reshape(-1, x.shape[-1])). {FIX}")
    if dtype not in _FLOATS:
        raise UsageError(f"activations={path!r}: the tensor 'activations' has dtype {dtype}; "
                         f"it must be floating point. {FIX}")
    return int(shape[0]), int(shape[1])
