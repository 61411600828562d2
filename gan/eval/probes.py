"""Measuring what each activation does inside G and D: per hidden layer the dead and saturated shares and the
pre-activation / activation statistics of one forward pass, the layers' gradient norms, and G's Jacobian
conditioning (Odena et al. 2018). Pure functions of the networks and their inputs, per member ([K] tensors);
``gan.runs.diagnostics`` calls them on a schedule while training and logs what they find."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from gan.model.activations import output_bounds
from gan.model.population import buffers_restored


def hidden_layers(net: nn.Sequential) -> list[tuple[int, nn.Linear, nn.Module]]:
    """(K, linear layer K, activation after it) for each hidden layer of a ``gan.model.networks.mlp``."""
    modules = dict(net.named_children())
    layers, k = [], 1
    while f"fc{k}" in modules:
        layers.append((k, modules[f"fc{k}"], modules[f"act{k}"]))
        k += 1
    return layers


def layer_stats(
    pre: torch.Tensor,
    act: torch.Tensor,
    bounds: Sequence[tuple[float, float]],
    dead_threshold: float = 1e-6,
    saturation_margin: float = 0.01,
) -> dict[str, torch.Tensor]:
    """Dead and saturated shares and moments of one layer's pre-activations and activations, [K, B, units], for
    each of the K members (whose activations have the output ``bounds``): each statistic a [K] tensor."""
    lo = torch.tensor([b[0] for b in bounds], dtype=act.dtype, device=act.device).view(-1, 1, 1)
    hi = torch.tensor([b[1] for b in bounds], dtype=act.dtype, device=act.device).view(-1, 1, 1)
    finite = torch.isfinite(lo) & torch.isfinite(hi)
    scale = torch.where(finite, hi - lo, torch.ones_like(lo))
    near = (act <= lo + saturation_margin * scale) | (act >= hi - saturation_margin * scale)
    return {
        "dead": (act.abs() <= dead_threshold).all(1).float().mean(1),
        "saturated": near.float().mean((1, 2)),
        "pre_mean": pre.mean((1, 2)),
        "pre_std": pre.flatten(1).std(1),
        "act_mean": act.mean((1, 2)),
        "act_std": act.flatten(1).std(1),
    }


@torch.no_grad()
def probe(
    net: nn.Sequential,
    x: torch.Tensor,
    act_names: Sequence[str],
    act_params: Sequence[Mapping[str, Any] | None],
    dead_threshold: float = 1e-6,
    saturation_margin: float = 0.01,
) -> dict[int, dict[str, Any]]:
    """One forward pass of ``net`` on ``x`` [K, B, in] with hooks: per hidden layer its per-member stats ([K]
    tensors) and raw [K, B, units] tensors. Member k's activation is ``act_names[k]``."""
    captured: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    handles = []
    for k, _, act in hidden_layers(net):
        handles.append(act.register_forward_hook(lambda m, inp, out, k=k: captured.__setitem__(k, (inp[0], out))))
    try:
        net(x)
    finally:
        for handle in handles:
            handle.remove()
    bounds = [output_bounds(name, params) for name, params in zip(act_names, act_params, strict=True)]
    return {
        k: {"stats": layer_stats(pre, out, bounds, dead_threshold, saturation_margin), "pre": pre, "act": out}
        for k, (pre, out) in captured.items()
    }


def grad_norms(net: nn.Sequential) -> dict[int, torch.Tensor]:
    """L2 norm of each hidden linear layer's gradients per member, [K] (0 where none yet)."""
    norms = {}
    for k, linear, _ in hidden_layers(net):
        squares = [p.grad.float().pow(2).flatten(1).sum(1) for p in linear.parameters() if p.grad is not None]
        norms[k] = torch.stack(squares).sum(0).sqrt() if squares else torch.zeros(linear.weight.shape[0])
    return norms


def jacobian_singular_values(generator: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Singular values of G's input-output Jacobian at each z: z [K, n, latent] -> [K, n, min(latent, out)]
    (descending; NaN for a member whose Jacobian is not finite).

    The Jacobian's columns are forward-mode products J e_j, taken by the double-backward trick (the gradient of
    the vector-Jacobian product J^T u with respect to u), with the latent basis spread over the batch: each z
    repeated once per latent direction, so one forward and two backward passes give every column. G runs in
    eval mode for the call (batch norm's running statistics), so that samples do not depend on each other.
    """
    members, n, latent = z.shape
    was_training = generator.training
    generator.eval()
    try:
        with torch.enable_grad():
            repeated = z.detach().repeat_interleave(latent, dim=1).requires_grad_(True)  # [K, n * latent, latent]
            y = generator(repeated)
            u = torch.zeros_like(y, requires_grad=True)
            (vjp,) = torch.autograd.grad(y, repeated, u, create_graph=True)
            basis = torch.eye(latent, dtype=vjp.dtype, device=vjp.device).repeat(n, 1).expand(members, -1, -1)
            (columns,) = torch.autograd.grad(vjp, u, basis)  # row (i, j) = J(z_i) e_j
    finally:
        generator.train(was_training)
    jacobians = columns.detach().view(members, n, latent, -1).transpose(-1, -2)  # [K, n, out, latent]
    values = torch.full(
        (members, n, min(jacobians.shape[-2:])), math.nan, dtype=jacobians.dtype, device=jacobians.device
    )
    finite = torch.isfinite(jacobians).flatten(1).all(1)  # the SVD refuses non-finite input: NaN for such members
    if bool(finite.any()):
        values[finite] = torch.linalg.svdvals(jacobians[finite])
    return values


def jacobian_conditioning(generator: nn.Module, z: torch.Tensor) -> dict[str, torch.Tensor]:
    """Mean and standard deviation over the z of log(s_max / s_min) of G's Jacobian, per member ([K] each). A
    rank-deficient Jacobian (s_min = 0: e.g. a layer of dead units narrower than the latent) counts as
    log(s_max / tiny), a very large but finite number."""
    with buffers_restored(generator):
        values = jacobian_singular_values(generator, z)
    tiny = torch.finfo(values.dtype).tiny
    log_cond = values[..., 0].clamp_min(tiny).log() - values[..., -1].clamp_min(tiny).log()
    return {"log_cond_mean": log_cond.mean(1), "log_cond_std": log_cond.std(1, unbiased=False)}


def pattern_entropies(pre: torch.Tensor) -> dict[str, torch.Tensor]:
    """How varied one layer's binarized activation patterns are over a batch, per member: ``pre`` [K, B, units] ->
    [K] tensors, each unit read as on (pre-activation > 0, where every activation of the lab changes regime: the
    kink of the ReLU family, the inflection of tanh and sigmoid) or off.

    - ``unit_entropy``: the mean over units of the binary entropy (bits) of P(on) over the batch: 1 when each unit
      splits the batch in half, 0 when every unit is always on or always off (BRE's marginal term, Cao et al. 2018);
    - ``pattern_entropy``: the entropy (bits) of the batch's distinct on/off patterns of the whole layer, divided by
      log2(B): 1 when every sample has its own pattern, 0 when all share one;
    - ``pattern_similarity``: the mean over pairs of different samples of |s_i . s_j| / units with s = +-1 (BRE's
      pairwise term): 0 for independent patterns, 1 when all patterns are equal or opposite.
    """
    on = pre > 0
    members, batch, units = on.shape
    p = on.double().mean(1)  # [K, units]
    bits = -(p * p.clamp_min(1e-300).log2() + (1 - p) * (1 - p).clamp_min(1e-300).log2())
    joint = []
    for k in range(members):
        _, counts = torch.unique(on[k], dim=0, return_counts=True)
        q = counts.double() / batch
        joint.append(-(q * q.log2()).sum() / math.log2(batch) if batch > 1 else q.new_zeros(()))
    signs = on.double() * 2 - 1
    gram = (signs @ signs.transpose(1, 2)).abs() / units  # [K, B, B]
    pairs = max(1, batch * (batch - 1))
    return {
        "unit_entropy": bits.mean(1).float(),
        "pattern_entropy": torch.stack(joint).float(),
        "pattern_similarity": ((gram.sum((1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(1)) / pairs).float(),
    }


def input_gradients(discriminator: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """D's logits at ``x`` [K, B, in] and their gradients with respect to ``x`` ([K, B] and [K, B, in]): what G's
    update receives through each fake (a loss on the logit only scales it per sample)."""
    with torch.enable_grad():
        inputs = x.detach().requires_grad_(True)
        logits = discriminator(inputs)
        (grads,) = torch.autograd.grad(logits.sum(), inputs)
    return logits.detach(), grads


def gradient_diversity(grads: torch.Tensor) -> torch.Tensor:
    """1 minus the mean cosine similarity of the gradients of different samples, [K, B, in] -> [K]: 0 when every
    fake is pushed the same way (a linear D), about 1 for unrelated directions. A zero gradient counts as
    orthogonal to every other."""
    members, batch, _ = grads.shape
    norms = grads.double().norm(dim=-1, keepdim=True)
    unit = torch.where(norms > 0, grads.double() / norms.clamp_min(1e-300), torch.zeros_like(norms))
    total = unit.sum(1).pow(2).sum(-1)  # sum over all ordered pairs (i, j) of cos(i, j), the diagonal included
    own = unit.pow(2).sum((1, 2))
    return (1 - (total - own) / max(1, batch * (batch - 1))).float()


def learning_signal(discriminator: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> dict[str, torch.Tensor]:
    """What D tells G, per member ([K] each): the mean norm of D's input gradient on real and on fake samples,
    their diversity over the fakes (``gradient_diversity``) and D's mean logit on each."""
    logits_real, grads_real = input_gradients(discriminator, real)
    logits_fake, grads_fake = input_gradients(discriminator, fake)
    return {
        "grad_norm_real": grads_real.norm(dim=-1).mean(1),
        "grad_norm_fake": grads_fake.norm(dim=-1).mean(1),
        "grad_diversity": gradient_diversity(grads_fake),
        "logit_real": logits_real.mean(1),
        "logit_fake": logits_fake.mean(1),
    }


# The diagnostics' TensorBoard group: named to sort after eval/, samples/ and train/ (TensorBoard orders groups
# alphabetically, and a dashboard should open on the answer, not on 100 per-layer cards).
DIAG_TAG = "train_diag"


# D's per-layer pattern measures, on real and on fake batches, and its learning signal to G (one value per probe)
D_LAYER_STATS = tuple(
    f"{name}_{side}" for name in ("unit_entropy", "pattern_entropy", "pattern_similarity") for side in ("real", "fake")
)
D_SIGNAL_STATS = ("grad_norm_real", "grad_norm_fake", "grad_diversity", "logit_real", "logit_fake")


def summarize(scalars: Mapping[str, float]) -> dict[str, float]:
    """One member's probe as results.json keeps it: per network the dead and saturated shares averaged over its
    hidden layers, D's pattern entropies (averaged over its hidden layers) and learning signal, G's conditioning."""
    summary: dict[str, float] = {}
    for net in ("G", "D"):
        for stat in ("dead", "saturated"):
            values = [
                v
                for tag, v in scalars.items()
                if tag.startswith(f"{DIAG_TAG}/{net}/layer") and tag.endswith(f"/{stat}")
            ]
            if values:
                summary[f"{net}_{stat}"] = sum(values) / len(values)
    for stat in D_LAYER_STATS:
        values = [v for tag, v in scalars.items() if tag.startswith(f"{DIAG_TAG}/D/layer") and tag.endswith(f"/{stat}")]
        if values:
            summary[f"D_{stat}"] = sum(values) / len(values)
    for stat in D_SIGNAL_STATS:
        if f"{DIAG_TAG}/D/{stat}" in scalars:
            summary[f"D_{stat}"] = scalars[f"{DIAG_TAG}/D/{stat}"]
    for stat in ("log_cond_mean", "log_cond_std"):
        if f"{DIAG_TAG}/G/jacobian_{stat}" in scalars:
            summary[f"G_jacobian_{stat}"] = scalars[f"{DIAG_TAG}/G/jacobian_{stat}"]
    return summary
