"""The active Jacobian as one compiled CPU pass per token (``active_jacobian.c``).

Why hand-written C: on CPU the Jacobian term is memory traffic, not arithmetic. Torch's
ops (``jsae._ActiveJacobian``: gather rows, scale, bmm, scatter-add, in cache-sized
blocks) each write and re-read a (tokens, k, d_mlp) block, and the step spends most of the
term's time moving those blocks (benchmarks/jsae.py). No library fuses gather -> scale ->
k x k dot products -> scatter-add (torch.compile's inductor, tried on both the reduction and
the bmm form, is 1.6-9x slower than the blocked torch path here). The C file computes each
token's J from the k rows of A and B^T it needs while they sit in L1 and never
materialises a block; its backward accumulates the gradients of A and B^T per thread.

It is compiled on first use with the system C compiler (``$CC``, else ``cc``; the machine
this project is developed on has gcc) into ``$MI_IDEAS_CACHE/kernels`` (default
``~/.cache/mi-ideas/kernels``), keyed by the source, the flags, the compiler's version and
what ``-march=native`` resolves to, and loaded with ctypes (no Python headers or torch extension toolchain needed;
building takes about a second). Where there is no compiler or the build fails, the torch
path runs instead, with one warning. The torch path is also what runs on a GPU, for dtypes
other than float32 / float64, and with ``kernel="torch"``. tests/test_sparsify_model.py
checks both paths against autograd and against each other.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

KERNELS = ("auto", "c", "torch")
_SOURCE = Path(__file__).with_name("active_jacobian.c")
_FLAGS = ["-O3", "-march=native", "-shared", "-fPIC"]
_OPENMP = "-fopenmp"  # dropped, with a serial build, where the compiler has no OpenMP
#: Extra memory the backward's per-thread gradient accumulators may take (bytes): the
#: thread count is capped so that n_threads x (s1 + s2) x d_mlp floats stay within it.
ACCUMULATOR_BUDGET = 256 * 2**20
MIN_TOKENS_PER_THREAD = 16
_LIB: ctypes.CDLL | None = None
_BUILD_ERROR: str | None = None


def _cpu_id(cc: str) -> str:
    """What ``-march=native`` resolves to: the compiler's own expansion of it (gcc and clang
    print the resolved target with ``-###``), plus the CPU's model and feature lines where
    the OS has them, so a cache shared between machines never serves a foreign build."""
    probe = subprocess.run([cc, "-march=native", "-###", "-E", "-x", "c", os.devnull],
                           capture_output=True, text=True, check=False)
    lines: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            lines = sorted({ln for ln in f if ln.startswith(("model name", "flags", "Features",
                                                             "CPU implementer", "CPU part"))})
    except OSError:
        pass
    return probe.stderr + "".join(lines) + platform.processor() + platform.machine()


def _cache_dir() -> Path:
    from mi_ideas.harvest import cache_root

    return cache_root() / "kernels"


def _compile(cc: str, flags: list[str], target: Path) -> None:
    """Compile into a temporary file next to ``target`` and rename it, so a concurrent
    process never loads half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([cc, *flags, "-o", tmp, str(_SOURCE)], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{cc} failed: {done.stderr.strip()[-2000:]}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _build() -> ctypes.CDLL:
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found ($CC, cc, gcc or clang)")
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256("\0".join([_SOURCE.read_text(), " ".join(_FLAGS), version,
                                    _cpu_id(cc)]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"active_jacobian-{key}.so"
    if not target.exists():
        try:
            _compile(cc, [*_FLAGS, _OPENMP], target)
        except RuntimeError:
            _compile(cc, _FLAGS, target)  # no OpenMP (e.g. Apple clang): one thread
    lib = ctypes.CDLL(str(target))
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    for suf in ("f32", "f64"):
        fwd, bwd = getattr(lib, f"jac_fwd_{suf}"), getattr(lib, f"jac_bwd_{suf}")
        fwd.argtypes, fwd.restype = [p] * 6 + [i64] * 5, ctypes.c_int
        bwd.argtypes, bwd.restype = [p] * 9 + [i64] * 7, ctypes.c_int
    return lib


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first call; None (after one warning) where it cannot be."""
    global _LIB, _BUILD_ERROR
    if _LIB is None and _BUILD_ERROR is None:
        try:
            _LIB = _build()
        except (OSError, RuntimeError) as err:
            _BUILD_ERROR = str(err)
            warnings.warn(f"sparsify-model: the compiled Jacobian kernel is unavailable ({err}); "
                          "the Jacobian term runs on torch ops instead, which is correct but "
                          "about 2x slower on CPU (install a C compiler, or set CC, to get it)",
                          RuntimeWarning, stacklevel=2)
    return _LIB


def usable(kernel: str, *tensors: torch.Tensor) -> bool:
    """Whether the C kernel runs for these inputs under the ``kernel`` choice
    ("auto": where it can; "c": must, or an error says why; "torch": never)."""
    if kernel not in KERNELS:
        raise ValueError(f"jacobian kernel {kernel!r} is not one of {KERNELS}")
    if kernel == "torch":
        return False
    dtypes = {t.dtype for t in tensors}
    fits = (all(t.device.type == "cpu" for t in tensors) and len(dtypes) == 1
            and tensors[0].dtype in (torch.float32, torch.float64))
    if kernel == "c" and not fits:
        raise ValueError("jacobian kernel 'c' runs on CPU float32 / float64 tensors of one dtype "
                         f"only; got {sorted({str(t.device) for t in tensors})} "
                         f"{sorted(str(d) for d in dtypes)} (use kernel 'auto' or 'torch')")
    if not fits:
        return False
    if library() is None:
        if kernel == "c":
            raise RuntimeError(f"jacobian kernel 'c' could not be built: {_BUILD_ERROR}")
        return False
    return True


def _checked(a, bt, dphi, idx_in, idx_out):
    """Contiguous inputs with consistent shapes and in-range indices (the C code trusts
    them: a bad index would read outside A or B^T)."""
    a, bt, dphi = a.contiguous(), bt.contiguous(), dphi.contiguous()
    idx_in, idx_out = idx_in.contiguous().long(), idx_out.contiguous().long()
    ok = (a.ndim == bt.ndim == dphi.ndim == idx_in.ndim == idx_out.ndim == 2
          and bt.shape[1] == dphi.shape[1] == a.shape[1]
          and idx_in.shape[0] == idx_out.shape[0] == dphi.shape[0])
    if not ok:
        raise ValueError(f"active Jacobian: inconsistent shapes a {tuple(a.shape)}, b^T "
                         f"{tuple(bt.shape)}, dphi {tuple(dphi.shape)}, idx_in "
                         f"{tuple(idx_in.shape)}, idx_out {tuple(idx_out.shape)} (want (s1, m), "
                         f"(s2, m), (t, m), (t, k1), (t, k2))")
    for idx, rows, what in ((idx_in, a.shape[0], "idx_in"), (idx_out, bt.shape[0], "idx_out")):
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= rows):
            raise ValueError(f"active Jacobian: {what} has indices outside 0..{rows - 1}")
    return a, bt, dphi, idx_in, idx_out


def _threads(t: int, s1: int, s2: int, dm: int, itemsize: int) -> int:
    """Threads for the C calls: torch's count, capped so each gets MIN_TOKENS_PER_THREAD
    tokens and the backward's per-thread accumulators stay within ACCUMULATOR_BUDGET."""
    per_thread = max((s1 + s2) * dm * itemsize, 1)
    return max(1, min(torch.get_num_threads(), t // MIN_TOKENS_PER_THREAD,
                      ACCUMULATOR_BUDGET // per_thread))


class ActiveJacobianC(torch.autograd.Function):
    """``jsae._ActiveJacobian`` (same arguments: A, B^T, phi', indices) computed by the C
    kernel."""

    @staticmethod
    def forward(ctx, a, bt, dphi, idx_in, idx_out):  # type: ignore[override]
        a, bt, dphi, idx_in, idx_out = _checked(a, bt, dphi, idx_in, idx_out)
        t, k1 = idx_in.shape
        k2, dm = idx_out.shape[1], a.shape[1]
        out = dphi.new_zeros(t, k2, k1)
        n = _threads(t, a.shape[0], bt.shape[0], dm, a.element_size())
        ctx.n_threads = n
        ctx.save_for_backward(a, bt, dphi, idx_in, idx_out)
        if out.numel() == 0 or dm == 0:
            return out
        suf = "f32" if a.dtype == torch.float32 else "f64"
        rc = getattr(library(), f"jac_fwd_{suf}")(
            a.data_ptr(), bt.data_ptr(), dphi.data_ptr(), idx_in.data_ptr(), idx_out.data_ptr(),
            out.data_ptr(), t, k1, k2, dm, n)
        if rc != 0:
            raise MemoryError("the Jacobian kernel could not allocate its scratch buffers")
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        a, bt, dphi, idx_in, idx_out = ctx.saved_tensors
        g = g.contiguous()
        t, k1 = idx_in.shape
        k2, dm = idx_out.shape[1], a.shape[1]
        n = ctx.n_threads
        ga = a.new_zeros(n, *a.shape)      # one accumulator per thread, summed below
        gb = bt.new_zeros(n, *bt.shape)
        gd = torch.zeros_like(dphi)
        if g.numel() and dm:
            suf = "f32" if a.dtype == torch.float32 else "f64"
            rc = getattr(library(), f"jac_bwd_{suf}")(
                a.data_ptr(), bt.data_ptr(), dphi.data_ptr(), idx_in.data_ptr(), idx_out.data_ptr(),
                g.data_ptr(), gd.data_ptr(), ga.data_ptr(), gb.data_ptr(), t, k1, k2, dm,
                a.shape[0], bt.shape[0], n)
            if rc != 0:
                raise MemoryError("the Jacobian kernel could not allocate its scratch buffers")
        return ga.sum(0) if n > 1 else ga[0], gb.sum(0) if n > 1 else gb[0], gd, None, None
