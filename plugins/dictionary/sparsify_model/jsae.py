"""Jacobian SAEs (Farnik et al. 2025, arXiv 2502.18147) as a SAELens training SAE.

A pair of TopK SAEs around one MLP: SAE 1 on the MLP input x, SAE 2 on the MLP's output
computed from SAE 1's reconstruction, y = MLP(x_hat). The Jacobian of SAE 2's latents
with respect to SAE 1's, restricted to the k active ones of each, is

    J[b] = B[:, out_b]^T · diag(phi'(pre_b)) · A[in_b]^T        (k2 x k1 per token)

with A = W_dec1 · W_in (d_sae1 x d_mlp) and B = W_out · W_enc2 (d_mlp x d_sae2)
precomputed once per step, so a token costs O(k1 · k2 · d_mlp), never the full
d_sae2 x d_sae1 matrix. Loss = MSE(x, x_hat) + MSE(y, y_hat) + TopK aux losses
+ lambda · mean_b sum |J[b]|.

SAELens's ``SAETrainer`` trains one ``TrainingSAE`` and has no hook for an extra loss
term, so :class:`JacobianSAEPair` subclasses SAELens's ``TopKTrainingSAE`` (it *is* SAE 1)
and holds SAE 2 (another ``TopKTrainingSAE``) and the frozen MLP; its
``training_forward_pass`` adds SAE 2's loss and the Jacobian term. ``SAETrainer`` drives
it unchanged (Adam over both SAEs' parameters, lr schedule, dead-latent tracking of SAE 1).
Both SAEs use ``rescale_acts_by_decoder_norm=False`` and ``apply_b_dec_to_input=False`` so
the weights above are the effective encoder and decoder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
from sae_lens.saes.sae import TrainStepInput, TrainStepOutput

ACTIVATIONS = ("relu", "gelu_new", "gelu")


_C, _A = math.sqrt(2.0 / math.pi), 0.044715  # gelu_new: 0.5 x (1 + tanh(c (x + a x^3)))


def _act_first(name: str, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple]:
    """phi(pre), phi'(pre) in closed form (no autograd graph; in-place where a temporary
    allows), and the terms phi'' needs."""
    if name == "relu":
        d1 = (pre > 0).to(pre.dtype)
        return pre * d1, d1, ()
    if name == "gelu_new":
        p2 = pre * pre
        t = torch.addcmul(pre, pre, p2, value=_A).mul_(_C).tanh_()      # tanh(u), u = c (x + a x^3)
        half = t.add(1).mul_(0.5)                                       # 0.5 (1 + t)
        du = p2.mul_(3 * _C * _A).add_(_C)                              # du/dx
        sech2 = torch.addcmul(torch.ones_like(t), t, t, value=-1)        # 1 - t^2
        d1 = torch.mul(pre, du).mul_(sech2).mul_(0.5).add_(half)        # 0.5 (1 + t) + 0.5 x sech2 du
        return pre * half, d1, (pre, t, du, sech2)
    if name == "gelu":  # x Phi(x)
        cdf = torch.erf(pre * (1 / math.sqrt(2.0))).mul_(0.5).add_(0.5)
        pdf = torch.mul(pre, pre).mul_(-0.5).exp_().mul_(1 / math.sqrt(2 * math.pi))
        return pre * cdf, torch.addcmul(cdf, pre, pdf), (pre, pdf)
    raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")


def _act_second(name: str, saved: tuple) -> torch.Tensor | None:
    """phi''(pre) from :func:`_act_first`'s saved terms (None: identically 0)."""
    if name == "relu":
        return None
    if name == "gelu_new":
        pre, t, du, sech2 = saved
        # phi'' = sech2 (du + 0.5 x (6 a c x - 2 t du^2)) = sech2 (du + x (3 a c x - t du^2))
        return torch.mul(t, du).mul_(du).neg_().add_(pre, alpha=3 * _A * _C).mul_(pre).add_(du).mul_(sech2)
    pre, pdf = saved  # gelu
    return torch.mul(pre, pre).neg_().add_(2).mul_(pdf)


class _ActAndGrad(torch.autograd.Function):
    """(phi(pre), phi'(pre)) with the backward g_h phi' + g_d phi'' in closed form: written
    by hand because autograd through the elementwise derivative formula records and replays
    a dozen (batch, d_mlp) operations per step (benchmarks/jsae.py). The forward computes
    phi and phi' in one pass sharing the tanh / erf; phi'' is formed in the backward from
    the saved terms."""

    @staticmethod
    def forward(ctx, pre, name):  # type: ignore[override]
        h, d1, saved = _act_first(name, pre)
        ctx.name = name
        ctx.save_for_backward(d1, *saved)
        return h, d1

    @staticmethod
    def backward(ctx, g_h, g_d):  # type: ignore[override]
        d1, *saved = ctx.saved_tensors
        g = g_h * d1 if g_h is not None else torch.zeros_like(d1)
        if g_d is not None:
            d2 = _act_second(ctx.name, tuple(saved))
            if d2 is not None:
                g = g.add_(d2.mul_(g_d))
        return g, None


def act_and_grad(name: str, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(pre) and phi'(pre) in closed form, differentiable (to second order) in pre, for
    the MLP's activation."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")
    return _ActAndGrad.apply(pre, name)


@dataclass
class MLP:
    """A frozen MLP y = phi(x W_in + b_in) W_out + b_out (W_in: (d_in, d_mlp))."""

    w_in: torch.Tensor
    b_in: torch.Tensor
    w_out: torch.Tensor
    b_out: torch.Tensor
    act: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pre = x @ self.w_in + self.b_in
        fn = {"relu": torch.relu, "gelu": torch.nn.functional.gelu,
              "gelu_new": lambda p: torch.nn.functional.gelu(p, approximate="tanh")}[self.act]
        return fn(pre) @ self.w_out + self.b_out


CHUNK = 32  # tokens per block: the gathered (CHUNK, k, d_mlp) rows stay in L2 (512 KiB at k 8, d_mlp 512)


def _chunk(t: int, device: torch.device) -> int:
    """Tokens per block: CHUNK on CPU (cache-sized blocks, benchmarks/jsae.py); the whole
    batch elsewhere, where each block costs kernel launches and there is no small cache to
    fit (a GPU's throughput at these shapes is not measured here)."""
    return max(1, min(CHUNK, t)) if device.type == "cpu" else max(1, t)


class _ActiveJacobian(torch.autograd.Function):
    """J[t] = B_sel[t] · diag(dphi[t]) · A_sel[t]^T with a closed-form backward.

    Written by hand (no library has it): autograd's generic gather + broadcast multiply +
    bmm chain allocates and re-reads several (batch, k, d_mlp) temporaries (4 MiB each at
    the default shapes, each a fresh allocation and a pass through DRAM). Here tokens go in
    blocks of ``CHUNK`` through preallocated buffers, so every gathered block is written,
    scaled and read by the bmm while it is in cache; the backward gathers the rows again
    (cheaper than keeping them: A and B are 512 KiB and stay cached) and, for G = dL/dJ,
    dA_sel = G^T · (B_sel·dphi),  W = G · A_sel,  d(dphi) = sum_j W ⊙ B_sel,
    dB_sel = W ⊙ dphi  (three bmm per block in all, forward included).
    """

    @staticmethod
    def forward(ctx, a, bt, dphi, idx_in, idx_out):  # type: ignore[override]
        t, k1 = idx_in.shape
        k2, dm = idx_out.shape[1], a.shape[1]
        c = _chunk(t, a.device)
        out = dphi.new_empty(t, k2, k1)
        a_buf, b_buf = a.new_empty(c * k1, dm), a.new_empty(c * k2, dm)
        for s in range(0, t, c):
            n = min(c, t - s)
            a_sel = torch.index_select(a, 0, idx_in[s:s + n].reshape(-1), out=a_buf[:n * k1]).view(n, k1, dm)
            b_sel = torch.index_select(bt, 0, idx_out[s:s + n].reshape(-1), out=b_buf[:n * k2]).view(n, k2, dm)
            b_sel.mul_(dphi[s:s + n, None, :])
            torch.bmm(b_sel, a_sel.transpose(1, 2), out=out[s:s + n])
        ctx.save_for_backward(a, bt, dphi, idx_in, idx_out)
        return out

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        a, bt, dphi, idx_in, idx_out = ctx.saved_tensors
        t, k1 = idx_in.shape
        k2, dm = idx_out.shape[1], a.shape[1]
        c = _chunk(t, a.device)
        g = g.contiguous()
        need_a, need_b, need_d = ctx.needs_input_grad[:3]
        ga = torch.zeros_like(a) if need_a else None
        gb = torch.zeros_like(bt) if need_b else None
        gd = torch.empty_like(dphi) if need_d else None
        a_buf, b_buf = a.new_empty(c * k1, dm), a.new_empty(c * k2, dm)
        w_buf, ga_buf = a.new_empty(c * k2, dm), a.new_empty(c * max(k1, k2), dm)
        for s in range(0, t, c):
            n = min(c, t - s)
            ii, oo = idx_in[s:s + n].reshape(-1), idx_out[s:s + n].reshape(-1)
            gc, d = g[s:s + n], dphi[s:s + n, None, :]
            a_sel = torch.index_select(a, 0, ii, out=a_buf[:n * k1]).view(n, k1, dm)
            b_sel = torch.index_select(bt, 0, oo, out=b_buf[:n * k2]).view(n, k2, dm)
            if need_b or need_d:
                w = torch.bmm(gc, a_sel, out=w_buf[:n * k2].view(n, k2, dm))         # G · A_sel
                if need_d:
                    torch.sum(torch.mul(w, b_sel, out=ga_buf[:n * k2].view(n, k2, dm)), 1, out=gd[s:s + n])
                if need_b:
                    gb.index_add_(0, oo, w.mul_(d).view(-1, dm))
            if need_a:
                ga_sel = torch.bmm(gc.transpose(1, 2), b_sel.mul_(d), out=ga_buf[:n * k1].view(n, k1, dm))
                ga.index_add_(0, ii, ga_sel.view(-1, dm))
        return ga, gb, gd, None, None


def _jacobian_bt(a: torch.Tensor, bt: torch.Tensor, dphi: torch.Tensor, idx_in: torch.Tensor,
                 idx_out: torch.Tensor, kernel: str = "auto") -> torch.Tensor:
    """:func:`active_jacobian` with B already transposed, on the chosen kernel."""
    from .kernel import ActiveJacobianC, usable

    fn = ActiveJacobianC if usable(kernel, a, bt, dphi) else _ActiveJacobian
    return fn.apply(a, bt.contiguous(), dphi.contiguous(), idx_in.contiguous(), idx_out.contiguous())


def active_jacobian(a: torch.Tensor, b: torch.Tensor, dphi: torch.Tensor, idx_in: torch.Tensor,
                    idx_out: torch.Tensor, kernel: str = "auto") -> torch.Tensor:
    """(batch, k2, k1) Jacobian of the active output latents w.r.t. the active input latents:
    J[t, j, i] = sum_m b[m, idx_out[t, j]] dphi[t, m] a[idx_in[t, i], m]
    (einsum('tjm,tm,tim->tji')), differentiable in a, b and dphi. ``kernel``: "c" the
    compiled per-token pass (:mod:`.kernel`), "torch" blocked bmm over gathered rows
    (:class:`_ActiveJacobian`), "auto" the first where it runs (CPU float32 / float64 and a
    C compiler), else the second."""
    return _jacobian_bt(a, b.T, dphi, idx_in, idx_out, kernel)


class _TopKOnce:
    """SAELens's ``TopKTrainingSAE.encode_with_hidden_pre`` (pre-activation, ``TopK``: top-k
    values through ReLU, zeros elsewhere), but keeping the top-k indices: the Jacobian needs
    each token's active latents and SAELens's ``TopK`` drops them, and a second ``topk``
    costs as much as the encoder matmul at these sizes (benchmarks/jsae.py)."""

    def encode_topk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(latents, pre-activations, indices of the k selected latents per row)."""
        sae_in = self.process_sae_in(x)
        pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        vals, idx = torch.topk(pre, k=self.cfg.k, dim=-1, sorted=False)
        z = self.hook_sae_acts_post(torch.zeros_like(pre).scatter_(-1, idx, vals.relu()))
        return z, pre, idx

    def encode_with_hidden_pre(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, pre, _ = self.encode_topk(x)
        return z, pre


class _OutputSAE(_TopKOnce, TopKTrainingSAE):
    """SAE 2: SAELens's TopK training SAE with :class:`_TopKOnce`'s encoder."""


@dataclass
class JacobianPairConfig(TopKTrainingSAEConfig):
    """SAE 1's TopK config plus SAE 2's width, the MLP's output width and lambda."""

    d_out: int = 128
    d_sae_out: int = 512
    jacobian_coefficient: float = 0.0
    jacobian_kernel: str = "auto"  # see active_jacobian


class JacobianSAEPair(_TopKOnce, TopKTrainingSAE):
    """SAE 1 (this TopK SAE, on the MLP input) trained jointly with SAE 2 on the MLP output
    and an L1 penalty on the active Jacobian (see the module docstring)."""

    cfg: JacobianPairConfig  # type: ignore[assignment]

    def __init__(self, cfg: JacobianPairConfig, mlp: MLP):
        super().__init__(cfg)
        self.sae2 = _OutputSAE(TopKTrainingSAEConfig(
            d_in=cfg.d_out, d_sae=cfg.d_sae_out, k=cfg.k, dtype=cfg.dtype, device=cfg.device,
            apply_b_dec_to_input=False, rescale_acts_by_decoder_norm=False,
            aux_loss_coefficient=cfg.aux_loss_coefficient))
        self.mlp_act = mlp.act
        for name in ("w_in", "b_in", "w_out", "b_out"):
            self.register_buffer(f"mlp_{name}", getattr(mlp, name).detach().clone().float())

    def mlp(self, x: torch.Tensor, grad: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """MLP output and (``grad``) phi'(pre) at input x."""
        if not grad:
            return MLP(self.mlp_w_in, self.mlp_b_in, self.mlp_w_out, self.mlp_b_out, self.mlp_act)(x), None
        h, dphi = act_and_grad(self.mlp_act, x @ self.mlp_w_in + self.mlp_b_in)
        return h @ self.mlp_w_out + self.mlp_b_out, dphi

    def pair_forward(self, x: torch.Tensor, jacobian: bool = True) -> dict[str, torch.Tensor]:
        """Everything one batch needs: latents, reconstructions, the MLP's output on x_hat
        and (``jacobian``) the active k2 x k1 Jacobian."""
        z1, pre1, idx_in = self.encode_topk(x)
        x_hat = self.decode(z1)
        y, dphi = self.mlp(x_hat, grad=jacobian)
        z2, pre2, idx_out = self.sae2.encode_topk(y)
        out = {"z1": z1, "pre1": pre1, "x_hat": x_hat, "y": y, "z2": z2, "pre2": pre2,
               "y_hat": self.sae2.decode(z2), "idx_in": idx_in, "idx_out": idx_out}
        if jacobian:
            a = self.W_dec @ self.mlp_w_in                  # (d_sae1, d_mlp)
            bt = self.sae2.W_enc.T @ self.mlp_w_out.T        # B^T = (W_out W_enc2)^T: (d_sae2, d_mlp)
            jac = _jacobian_bt(a, bt, dphi, idx_in, idx_out, self.cfg.jacobian_kernel)
            # an output latent the ReLU of TopK clips to 0 has derivative 0
            jac = jac * (z2.gather(1, idx_out) > 0).to(jac.dtype)[..., None]
            out["jacobian"] = jac
        return out

    def save_inference_saes(self, path, *, hook_in: str, hook_out: str, model_name: str) -> dict:
        """Both SAEs as SAELens inference dictionaries: ``path/in`` (SAE 1, reading
        ``hook_in``) and ``path/out`` (SAE 2, reading ``hook_out``), each a directory that
        ``sae_lens.SAE.load_from_disk`` (and ``--sae DIR``) loads. Plain TopK SAEs with the
        trained weights are written, so the Jacobian pair's extra state (SAE 2 inside SAE 1,
        the frozen MLP) never reaches the files."""
        from pathlib import Path

        from sae_lens.saes.sae import SAEMetadata

        out = {}
        for which, sae, hook in (("in", self, hook_in), ("out", self.sae2, hook_out)):
            c = sae.cfg
            plain = TopKTrainingSAE(TopKTrainingSAEConfig(
                d_in=c.d_in, d_sae=c.d_sae, k=c.k, dtype="float32", device="cpu",
                apply_b_dec_to_input=False, rescale_acts_by_decoder_norm=False,
                metadata=SAEMetadata(model_name=model_name, hook_name=hook, hook_head_index=None)))
            own = sae.state_dict()
            plain.load_state_dict({k: own[k].detach().float() for k in plain.state_dict()})
            d = Path(path) / which
            plain.save_inference_model(str(d))
            out[which] = str(d)
        return out

    def training_forward_pass(self, step_input: TrainStepInput) -> TrainStepOutput:
        x = step_input.sae_in
        lam = self.cfg.jacobian_coefficient
        o = self.pair_forward(x, jacobian=lam > 0)
        mse1 = self.mse_loss_fn(o["x_hat"], x).sum(-1).mean()
        target = o["y"].detach()  # SAE 2 reconstructs the MLP's output; it does not move it
        mse2 = self.mse_loss_fn(o["y_hat"], target).sum(-1).mean()
        aux1 = self.calculate_topk_aux_loss(x, o["x_hat"], o["pre1"], step_input.dead_neuron_mask)
        losses = {"mse_loss": mse1, "mse_loss_out": mse2, "auxiliary_reconstruction_loss": aux1}
        total = mse1 + mse2 + aux1
        if lam > 0:
            jl = lam * o["jacobian"].abs().sum((1, 2)).mean()
            losses["jacobian_loss"] = jl
            total = total + jl
        return TrainStepOutput(sae_in=x, sae_out=o["x_hat"], feature_acts=o["z1"],
                               hidden_pre=o["pre1"], loss=total, losses=losses)


def make_pair(mlp: MLP, *, d_sae: int, k: int, lam: float, seed: int,
              kernel: str = "auto") -> JacobianSAEPair:
    """A fresh pair for ``mlp`` (weights from ``seed``; ``kernel``: see :func:`active_jacobian`)."""
    d_in, d_out = mlp.w_in.shape[0], mlp.w_out.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # SAELens initialises from the global generator
        return JacobianSAEPair(JacobianPairConfig(
            d_in=d_in, d_sae=d_sae, k=k, d_out=d_out, d_sae_out=d_sae, jacobian_coefficient=lam,
            jacobian_kernel=kernel,
            dtype="float32", device="cpu", apply_b_dec_to_input=False,
            rescale_acts_by_decoder_norm=False), mlp)


def fit_pair(mlp: MLP, x: torch.Tensor, *, d_sae: int, k: int, lam: float, steps: int,
             batch_size: int, lr: float, seed: int, kernel: str = "auto") -> JacobianSAEPair:
    """Train a pair on MLP inputs ``x`` with SAELens's ``SAETrainer`` (``kernel``: see
    :func:`active_jacobian`)."""
    from sae_lens import SAETrainer

    from mi_ideas.training.transcoder import quiet_trainer, trainer_config

    pair = make_pair(mlp, d_sae=d_sae, k=k, lam=lam, seed=seed, kernel=kernel)
    gen = torch.Generator().manual_seed(seed)

    def batches():
        while True:
            perm = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x) - batch_size + 1, batch_size):
                yield x[perm[i:i + batch_size]]

    trainer = SAETrainer(cfg=trainer_config(steps, batch_size, lr, warmup_steps=min(20, steps // 10)),
                         sae=pair, data_provider=batches())
    with torch.random.fork_rng(devices=[]), quiet_trainer(True):
        torch.manual_seed(seed)
        return trainer.fit()
