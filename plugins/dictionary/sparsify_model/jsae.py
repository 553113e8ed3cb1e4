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


def _act_terms(name: str, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """phi(pre), phi'(pre) and phi''(pre) in closed form (no autograd graph)."""
    if name == "relu":
        return torch.relu(pre), (pre > 0).to(pre.dtype), torch.zeros_like(pre)
    if name == "gelu_new":  # 0.5 x (1 + tanh(u)), u = c (x + a x^3), c = sqrt(2 / pi), a = 0.044715
        c, a = math.sqrt(2.0 / math.pi), 0.044715
        t = torch.tanh(c * (pre + a * pre ** 3))
        du = c * (1 + 3 * a * pre ** 2)
        sech2 = 1 - t ** 2
        d1 = 0.5 * (1 + t) + 0.5 * pre * sech2 * du
        d2 = sech2 * (du + 0.5 * pre * (6 * a * c * pre - 2 * t * du ** 2))
        return 0.5 * pre * (1 + t), d1, d2
    if name == "gelu":  # x Phi(x)
        cdf = 0.5 * (1 + torch.erf(pre / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * pre ** 2) / math.sqrt(2 * math.pi)
        return pre * cdf, cdf + pre * pdf, pdf * (2 - pre ** 2)
    raise ValueError(f"activation {name!r} is not one of {ACTIVATIONS}")


class _ActAndGrad(torch.autograd.Function):
    """(phi(pre), phi'(pre)) with the backward g_h phi' + g_d phi'' in closed form: written
    by hand because autograd through the elementwise derivative formula records and replays
    a dozen (batch, d_mlp) operations per step (benchmarks/jsae.py)."""

    @staticmethod
    def forward(ctx, pre, name):  # type: ignore[override]
        h, d1, d2 = _act_terms(name, pre)
        ctx.save_for_backward(d1, d2)
        return h, d1

    @staticmethod
    def backward(ctx, g_h, g_d):  # type: ignore[override]
        d1, d2 = ctx.saved_tensors
        g = g_h * d1 if g_h is not None else torch.zeros_like(d1)
        if g_d is not None:
            g = g + g_d * d2
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


class _ActiveJacobian(torch.autograd.Function):
    """J[t] = B_sel[t] · diag(dphi[t]) · A_sel[t]^T with a closed-form backward.

    Written by hand (no library has it) because autograd's generic backward of the gather
    + broadcast multiply + bmm chain allocates and re-reads several (batch, k, d_mlp)
    temporaries; here the backward reuses the forward's gathered rows and the scaled
    B_sel, and needs two bmm, one multiply and two index_add_ (benchmarks/jsae.py).
    For G = dL/dJ:  dA_sel = G^T · (B_sel·dphi),  W = G · A_sel,
    d(dphi) = sum_j W ⊙ B_sel,  dB_sel = W ⊙ dphi.
    """

    @staticmethod
    def forward(ctx, a, bt, dphi, idx_in, idx_out):  # type: ignore[override]
        t, k1 = idx_in.shape
        a_sel = a.index_select(0, idx_in.reshape(-1)).view(t, k1, -1)               # (t, k1, d_mlp)
        b_sel = bt.index_select(0, idx_out.reshape(-1)).view(t, idx_out.shape[1], -1)  # (t, k2, d_mlp)
        b_scaled = b_sel * dphi[:, None, :]
        ctx.save_for_backward(a_sel, b_sel, b_scaled, dphi, idx_in, idx_out)
        ctx.n_a, ctx.n_b = a.shape[0], bt.shape[0]
        return torch.bmm(b_scaled, a_sel.transpose(1, 2))

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        a_sel, b_sel, b_scaled, dphi, idx_in, idx_out = ctx.saved_tensors
        d_mlp = a_sel.shape[-1]
        ga = gb = gd = None
        if ctx.needs_input_grad[0]:
            g_a_sel = torch.bmm(g.transpose(1, 2), b_scaled)                      # (t, k1, d_mlp)
            ga = a_sel.new_zeros(ctx.n_a, d_mlp).index_add_(0, idx_in.reshape(-1),
                                                            g_a_sel.reshape(-1, d_mlp))
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            w = torch.bmm(g, a_sel)                                               # (t, k2, d_mlp)
            if ctx.needs_input_grad[2]:
                gd = (w * b_sel).sum(1)
            if ctx.needs_input_grad[1]:
                w.mul_(dphi[:, None, :])
                gb = b_sel.new_zeros(ctx.n_b, d_mlp).index_add_(0, idx_out.reshape(-1),
                                                                w.reshape(-1, d_mlp))
        return ga, gb, gd, None, None


def active_jacobian(a: torch.Tensor, b: torch.Tensor, dphi: torch.Tensor, idx_in: torch.Tensor,
                    idx_out: torch.Tensor) -> torch.Tensor:
    """(batch, k2, k1) Jacobian of the active output latents w.r.t. the active input latents:
    J[t, j, i] = sum_m b[m, idx_out[t, j]] dphi[t, m] a[idx_in[t, i], m]
    (einsum('tjm,tm,tim->tji') as one bmm over gathered rows, closed-form backward)."""
    return _ActiveJacobian.apply(a, b.T, dphi, idx_in, idx_out)


@dataclass
class JacobianPairConfig(TopKTrainingSAEConfig):
    """SAE 1's TopK config plus SAE 2's width, the MLP's output width and lambda."""

    d_out: int = 128
    d_sae_out: int = 512
    jacobian_coefficient: float = 0.0


class JacobianSAEPair(TopKTrainingSAE):
    """SAE 1 (this TopK SAE, on the MLP input) trained jointly with SAE 2 on the MLP output
    and an L1 penalty on the active Jacobian (see the module docstring)."""

    cfg: JacobianPairConfig  # type: ignore[assignment]

    def __init__(self, cfg: JacobianPairConfig, mlp: MLP):
        super().__init__(cfg)
        self.sae2 = TopKTrainingSAE(TopKTrainingSAEConfig(
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
        z1, pre1 = self.encode_with_hidden_pre(x)
        x_hat = self.decode(z1)
        y, dphi = self.mlp(x_hat, grad=jacobian)
        z2, pre2 = self.sae2.encode_with_hidden_pre(y)
        out = {"z1": z1, "pre1": pre1, "x_hat": x_hat, "y": y, "z2": z2, "pre2": pre2,
               "y_hat": self.sae2.decode(z2)}
        if jacobian:
            k = self.cfg.k
            idx_in = pre1.topk(k, dim=-1).indices
            idx_out = pre2.topk(k, dim=-1).indices
            a = self.W_dec @ self.mlp_w_in          # (d_sae1, d_mlp)
            b = self.mlp_w_out @ self.sae2.W_enc     # (d_mlp, d_sae2)
            jac = active_jacobian(a, b, dphi, idx_in, idx_out)
            # an output latent the ReLU of TopK clips to 0 has derivative 0
            jac = jac * (z2.gather(1, idx_out) > 0).to(jac.dtype)[..., None]
            out.update(jacobian=jac, idx_in=idx_in, idx_out=idx_out)
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


def make_pair(mlp: MLP, *, d_sae: int, k: int, lam: float, seed: int) -> JacobianSAEPair:
    """A fresh pair for ``mlp`` (weights from ``seed``)."""
    d_in, d_out = mlp.w_in.shape[0], mlp.w_out.shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # SAELens initialises from the global generator
        return JacobianSAEPair(JacobianPairConfig(
            d_in=d_in, d_sae=d_sae, k=k, d_out=d_out, d_sae_out=d_sae, jacobian_coefficient=lam,
            dtype="float32", device="cpu", apply_b_dec_to_input=False,
            rescale_acts_by_decoder_norm=False), mlp)


def fit_pair(mlp: MLP, x: torch.Tensor, *, d_sae: int, k: int, lam: float, steps: int,
             batch_size: int, lr: float, seed: int) -> JacobianSAEPair:
    """Train a pair on MLP inputs ``x`` with SAELens's ``SAETrainer``."""
    from sae_lens import SAETrainer

    from mi_ideas.training.transcoder import quiet_trainer, trainer_config

    pair = make_pair(mlp, d_sae=d_sae, k=k, lam=lam, seed=seed)
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
