"""Training throughput: a K-member pack, a single run, and a bare PyTorch loop of one model, in one process.

    python -m gan.bench data.root=../shared/mnist [--members 27] [--iters 1000] [--device cpu|cuda] [overrides ...]
    gan-bench data.root=../shared/mnist --members 27                  # the same, as the installed console script

``--metrics`` times the evaluation's metrics instead: one ``--samples``-sample evaluation (10,000 held-out real
training images' evaluator features) without the metric card and with it, in ``--rounds`` alternating rounds, the
ratio, and each part of the card alone (``gan.eval.metrics.time_card``; docs/metrics.md "The metric card"):

    python -m gan.bench --metrics data.root=../shared/mnist

The data folder is ``data.root=PATH``, as in every other command (``--data-root PATH``, the bench's old flag, still
works; giving both with different folders is an error). The flags say how to time; the Hydra overrides (in any order
with the flags) say what the timed run is.

All sides use the composed config (the defaults plus any Hydra overrides given): the same G and D, losses, Adam
settings, batch size and MNIST. The single run and the pack are ``gan.train``'s own Trainer (progress bar and
callbacks, evaluation and diagnostics off, as in the steady state between them); the pack's members take seeds
0..K-1 and cycle through the activation grid's hidden activations (``experiment=activation_grid``: 7 for G x 7 for
D), so its per-member activation groups cost what a study's do; ``--sequential`` of them, spread over the pack, are
also timed as single runs one after another (what the pack replaces, like for like: their activations cost what
the members' do). The reference is a plain eager loop over torch's own ``nn.Linear`` and ``torch.optim.Adam`` on
one model. The measurements alternate in ``--rounds`` rounds (each timed after a warm-up) and the medians are
reported as member-images per second (real images each member's D sees per second, summed over members). The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from gan.errors import ConfigError, exits_on_error
from gan.eval.classifier import load_evaluator
from gan.eval.corruptions import flat, real_images
from gan.eval.metrics import K_NEAREST, time_card
from gan.images import IMAGE_DIM
from gan.model.activations import build_activation
from gan.model.graphed import graphs_wanted
from gan.model.losses import MemberLosses
from gan.model.spec import default, member_data_range
from gan.runs.build import build_datamodule
from gan.runs.drift import drift, fit_members
from gan.runs.plan import check_model_memory, member_config
from gan.runs.schema import CONF_DIR

GRID_ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid")
# Stability switches the bare reference loop does not implement (it matches them only at their defaults).
REFERENCE_SWITCHES = (
    "r1_weight",
    "r2_weight",
    "bre_weight",
    "d_spectral_norm",
    "g_norm",
    "d_norm",
    "label_smoothing",
    "instance_noise",
    "d_minibatch_std",
    "g_ema",
)


def check_reference_can_match(member: dict[str, Any]) -> None:
    """Refuse stability switches and penalised losses: the reference would skip their work and flatter itself."""
    changed = [f"model.{k}={member[k]!r}" for k in REFERENCE_SWITCHES if member[k] != default(k)]
    if member["loss"] in ("wgan-gp", "rpgan"):  # a penalty on interpolates; G reading D's scores of reals
        changed.append(f"model.loss={member['loss']!r}")
    if member["augment"]:
        changed.append("model.augment")
    if changed:
        raise ConfigError(
            f"gan.bench compares the plain GAN iteration with a bare PyTorch loop, which does not implement "
            f"{', '.join(changed)}. Benchmark without those overrides (losses ns, minimax, lsgan and hinge are fine)."
        )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ReferenceLoop:
    """One GAN as a bare eager PyTorch loop: torch's nn.Linear layers and Adam, the images on the device, each
    batch a gather by a shuffled index, noise drawn on the device."""

    def __init__(self, member: dict[str, Any], images: torch.Tensor, batch_size: int, device: torch.device) -> None:
        params = member["act_params"]

        def mlp(sizes: Sequence[int], act: str, out_act: str) -> nn.Sequential:
            layers: list[nn.Module] = []
            for i in range(len(sizes) - 1):
                layers.append(nn.Linear(sizes[i], sizes[i + 1]))
                name = act if i < len(sizes) - 2 else out_act
                layers.append(build_activation(name, params.get(name)))
            return nn.Sequential(*layers).to(device)

        self.G = mlp([member["latent_dim"], *member["g_hidden"], IMAGE_DIM], member["g_act"], member["g_out_act"])
        self.D = mlp([IMAGE_DIM, *member["d_hidden"], 1], member["d_act"], member["d_out_act"])
        self.loss = MemberLosses([member["loss"]], [member["label_smoothing"]])
        adam = {k: member["optimizer_g"][k] for k in ("lr", "betas")}
        self.opt_g = torch.optim.Adam(self.G.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **{k: member["optimizer_d"][k] for k in ("lr", "betas")})
        self.d_steps, self.latent_dim, self.batch = member["d_steps"], member["latent_dim"], batch_size
        self.images = images.to(device)
        self.device = device
        self.images_per_iteration = batch_size * self.d_steps
        self._order = torch.randperm(len(self.images), device=device)
        self._at = 0

    def _next_batch(self) -> torch.Tensor:
        if self._at + self.images_per_iteration > len(self._order):
            self._order, self._at = torch.randperm(len(self.images), device=self.device), 0
        idx = self._order[self._at : self._at + self.images_per_iteration]
        self._at += self.images_per_iteration
        return self.images[idx].float().mul_(2 / 255).sub_(1)

    def step(self) -> None:
        G, D, loss = self.G, self.D, self.loss
        batch = self._next_batch()
        G.requires_grad_(False)
        for real in batch.chunk(self.d_steps):
            with torch.no_grad():
                fake = G(torch.randn(real.shape[0], self.latent_dim, device=self.device))
            d_loss = loss.d_loss(D(real).view(1, -1), D(fake).view(1, -1)).sum()
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        G.requires_grad_(True)
        D.requires_grad_(False)
        g_loss = loss.g_loss(D(G(torch.randn(self.batch, self.latent_dim, device=self.device))).view(1, -1)).sum()
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        D.requires_grad_(True)

    def time(self, warmup: int, iters: int) -> float:
        """Seconds for ``iters`` iterations after ``warmup`` untimed ones."""
        for _ in range(warmup):
            self.step()
        _sync(self.device)
        start = time.perf_counter()
        for _ in range(iters):
            self.step()
        _sync(self.device)
        return time.perf_counter() - start


class Timer(Callback):
    """Seconds from the end of batch ``warmup`` to the end of batch ``warmup + iters`` (synchronizing a GPU at
    both): the iterations alone, as the reference loop is timed, not the end-of-training hooks after them (the
    epoch's sample grid, the progress bar's close)."""

    def __init__(self, warmup: int, iters: int) -> None:
        self.warmup, self.iters, self.seen, self.start, self.seconds = warmup, iters, 0, 0.0, 0.0

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self.seen += 1
        if self.seen == self.warmup:
            _sync(pl_module.device)
            self.start = time.perf_counter()
        elif self.seen == self.warmup + self.iters:
            _sync(pl_module.device)
            self.seconds = time.perf_counter() - self.start


SET_BY_BENCH = ("seed", "model.fixed_noise_seed")  # pack_members sets them per member


def data_root_and_overrides(flag: str | None, overrides: Sequence[str]) -> tuple[str | None, list[str]]:
    """The data folder, given as ``data.root=PATH`` among the overrides (every command's spelling) or as the old
    ``--data-root PATH`` flag (``flag``), and the other overrides. None when neither gives it (the config's
    default). Two different folders are a ConfigError naming both: which one was meant cannot be guessed."""
    given: list[tuple[str, str]] = []  # (as written, the folder)
    rest = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") in SET_BY_BENCH:
            raise ConfigError(
                f"gan.bench {override}: the bench gives its members their seeds itself (0 to --members - 1, each "
                f"with its own fixed noise), so {key.lstrip('+~')} would be ignored. Leave it out; "
                f"{', '.join(SET_BY_BENCH)} are the bench's own."
            )
        if sep and key.lstrip("+") == "data.root":
            given.append((override, value))
        else:
            rest.append(override)
    if flag is not None:
        given.append((f"--data-root {flag}", flag))
    if len({folder for _, folder in given}) > 1:
        raise ConfigError(
            f"gan.bench got two data folders, {' and '.join(written for written, _ in given)}: give one, as "
            f"data.root=PATH (--data-root PATH is the old spelling of the same setting)."
        )
    return (given[0][1] if given else None), rest


def bench_config(data_root: str | None, run_dir: str, accelerator: str, overrides: Sequence[str]) -> DictConfig:
    """The timed config: gan.train's, composed with the bench's settings and the user's overrides (a bad override
    is a ConfigError naming it, as in gan.train); ``data_root`` None keeps the config's data folder."""
    try:
        return _compose_bench(data_root, run_dir, accelerator, overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        cause = f": {str(exc.__cause__).splitlines()[0]}" if exc.__cause__ else ""
        raise ConfigError(f"gan.bench overrides {' '.join(overrides) or '(none)'}: {exc}{cause}") from None


def _compose_bench(data_root: str | None, run_dir: str, accelerator: str, overrides: Sequence[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *([f"data.root={data_root}"] if data_root is not None else []),
                f"run_dir={run_dir}",
                "trainer.max_epochs=-1",
                f"trainer.accelerator={accelerator}",
                "trainer.enable_model_summary=false",
                "trainer.enable_checkpointing=false",
                "eval.enabled=false",  # evaluation and diagnostics run outside the timed steady state
                "diag.enabled=false",
                "~logger",
                *overrides,
            ],
        )


def pack_members(member: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """``count`` members: seeds 0..count-1, hidden activations cycling over the activation grid's 7 x 7."""
    out = []
    for k in range(count):
        g, d = divmod(k, len(GRID_ACTIVATIONS))
        changed = {"seed": k, "fixed_noise_seed": k}
        if count > 1:
            changed.update(g_act=GRID_ACTIVATIONS[g % len(GRID_ACTIVATIONS)], d_act=GRID_ACTIVATIONS[d])
        out.append({**member, **changed})
    return out


def time_lightning(
    cfg: DictConfig, members: list[dict[str, Any]], warmup: int, iters: int, cuda_graphs: str | None = None
) -> float:
    """Seconds for ``iters`` iterations of ``gan.train``'s Trainer on a population of ``members`` (``cuda_graphs``:
    the config's setting unless given)."""
    timer = Timer(warmup, iters)
    fit_members(cfg, members, warmup + iters, timer, cuda_graphs or str(cfg.get("cuda_graphs", "off")))
    return timer.seconds


def metrics_bench(data_root: str, samples: int, rounds: int, device: torch.device) -> dict[str, Any]:
    """``--metrics``: the evaluation's metrics timed without and with the card on ``samples`` held-out real training
    images' features (what a healthy generator's samples look like to the evaluator), printed and returned."""
    evaluator = load_evaluator(data_root).to(device)
    images, _ = real_images(data_root, samples)
    feats, logits = evaluator.embed_members(flat(images).unsqueeze(0), [(0.0, 1.0)])
    train, nearest = evaluator.memorization_reference()
    assert train is not None and nearest is not None  # loaded from data_root: it knows its training data
    found = time_card(
        feats[0], logits[0], evaluator.test_features, evaluator.test_radii, train, nearest, rounds=max(1, rounds)
    )
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    summary = {"device": where, **found}
    print(
        f"{where}: one {samples}-sample evaluation's metrics take {found['before_s']:.2f} s without the metric card, "
        f"{found['after_s']:.2f} s with it ({found['ratio']:.2f}x); the card's parts alone: "
        + ", ".join(f"{k} {v:.2f} s" for k, v in found["parts_s"].items())
    )
    print(json.dumps(summary))
    return summary


def drift_bench(
    data_root: str | None, tmp: str, device: torch.device, overrides: Sequence[str], count: int, iterations: int
) -> dict[str, Any]:
    """``--drift N``: the bench's pack of ``count`` trained N iterations captured and twice eagerly; the largest
    weight difference at each mark, printed as a table and returned (and printed) as JSON."""
    cfg = bench_config(data_root, tmp, "gpu" if device.type == "cuda" else "cpu", overrides)
    torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "highest")))
    member = member_config(OmegaConf.merge(cfg, {"seed": 0}))
    check_model_memory(member, int(cfg.data.batch_size), count, f"a pack of --members {count}")
    rows = drift(cfg, pack_members(member, count), iterations)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (nothing is captured on the CPU)"
    print(
        f"{where}: a pack of {count}, captured against eager (largest weight difference over every member; "
        f"iterations 1 and 2 are the eager warm-ups before the capture, the replays start at 3)"
    )
    print(f"{'iteration':>10} {'captured vs eager':>18} {'eager vs eager':>15}")
    for row in rows:
        print(f"{row['iteration']:>10} {row['captured_vs_eager']:>18.3g} {row['eager_vs_eager']:>15.3g}")
    summary = {"device": where, "members": count, "drift": rows}
    print(json.dumps(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data-root",
        default=None,
        metavar="PATH",
        help="the old spelling of the override data.root=PATH (preferred, as in every command; default: data)",
    )
    parser.add_argument("--members", type=int, default=27, help="members of the pack (default 27)")
    parser.add_argument("--warmup", type=int, default=50, help="untimed iterations before each timing")
    parser.add_argument("--iters", type=int, default=500, help="timed iterations of the single run and reference")
    parser.add_argument(
        "--pack-iters", type=int, default=None, help="timed pack iterations (default: iters/members, >= 20)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (medians reported)")
    parser.add_argument(
        "--sequential",
        type=int,
        default=4,
        help="members of the pack also timed as single runs, one after another (spread over the pack)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--metrics", action="store_true", help="time one evaluation's metrics without and with the metric card"
    )
    parser.add_argument("--samples", type=int, default=10_000, help="with --metrics: samples scored (default 10000)")
    parser.add_argument(
        "--drift",
        type=int,
        default=None,
        metavar="N",
        help="train the pack N iterations captured (cuda_graphs=on) and twice eagerly; print how far apart their "
        "weights are at iterations 1, 2, 5, 10, ... (gan/runs/drift.py)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides of the timed training config, e.g. data.root=../shared/mnist data.batch_size=128",
    )
    args = parser.parse_intermixed_args(argv)  # flags and overrides in any order
    pack_iters_given = 1 if args.pack_iters is None else args.pack_iters
    if min(args.members, args.iters, args.rounds, args.warmup, args.sequential, pack_iters_given) < 1:
        parser.error("--members, --iters, --pack-iters, --rounds, --warmup and --sequential must be positive")
    if args.sequential > args.members and args.drift is None:
        parser.error(f"--sequential {args.sequential}: at most --members ({args.members}) of the pack run alone")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but this machine has no usable CUDA GPU; use --device cpu")
    device = torch.device(args.device)
    if args.metrics:
        if not K_NEAREST < args.samples <= 50_000:
            parser.error(f"--samples {args.samples}: from {K_NEAREST + 1} to 50000 (held-out training images)")
        with exits_on_error():
            data_root, _ = data_root_and_overrides(args.data_root, args.overrides)
            return metrics_bench(data_root or "data", args.samples, args.rounds, device)
    if args.drift is not None:
        if args.drift < 1:
            parser.error(f"--drift {args.drift}: the iterations to train, at least 1")
        with exits_on_error(), tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp:
            data_root, overrides = data_root_and_overrides(args.data_root, args.overrides)
            return drift_bench(data_root, tmp, device, overrides, args.members, args.drift)
    pack_iters = args.pack_iters or max(20, args.iters // args.members)

    with exits_on_error(), tempfile.TemporaryDirectory(prefix="gan-bench-") as tmp:
        data_root, overrides = data_root_and_overrides(args.data_root, args.overrides)
        cfg = bench_config(data_root, tmp, "gpu" if device.type == "cuda" else "cpu", overrides)
        torch.set_float32_matmul_precision(str(cfg.get("float32_matmul_precision", "highest")))
        member = member_config(OmegaConf.merge(cfg, {"seed": 0}))
        check_model_memory(member, int(cfg.data.batch_size), args.members, f"a pack of --members {args.members}")
        check_reference_can_match(member)
        data = build_datamodule(cfg, [0], [member_data_range(member)], member["d_steps"])
        reference = ReferenceLoop(member, data.train_bytes, int(cfg.data.batch_size), device)
        images = reference.images_per_iteration
        members = pack_members(member, args.members)
        alone = members[:: max(1, len(members) // max(1, args.sequential))][: max(1, args.sequential)]
        rates: dict[str, list[float]] = {"reference": [], "single": [], "sequential": [], "pack": []}
        # On a GPU with CUDA graphs on, the eager single run and pack are timed too, side by side in each round.
        eager_too = graphs_wanted(str(cfg.get("cuda_graphs", "off")), device)
        if eager_too:
            rates.update(single_eager=[], pack_eager=[])
        for r in range(args.rounds):
            # the bare loop and the single run side by side, in turn first (a machine's speed drifts: each round's
            # ratio compares neighbours, and the order alternates so that a drift within a round cancels)
            for side in ("reference", "single") if r % 2 == 0 else ("single", "reference"):
                seconds = (
                    reference.time(args.warmup, args.iters)
                    if side == "reference"
                    else time_lightning(cfg, [member], args.warmup, args.iters)
                )
                rates[side].append(args.iters * images / seconds)
            seconds = sum(time_lightning(cfg, [m], args.warmup, pack_iters) for m in alone)
            rates["sequential"].append(len(alone) * pack_iters * images / seconds)
            pack_s = time_lightning(cfg, members, args.warmup, pack_iters)
            rates["pack"].append(pack_iters * images * args.members / pack_s)
            if eager_too:
                seconds = time_lightning(cfg, [member], args.warmup, args.iters, cuda_graphs="off")
                rates["single_eager"].append(args.iters * images / seconds)
                pack_s = time_lightning(cfg, members, args.warmup, pack_iters, cuda_graphs="off")
                rates["pack_eager"].append(pack_iters * images * args.members / pack_s)
    median = {k: statistics.median(v) for k, v in rates.items()}
    paired = [s / r for s, r in zip(rates["single"], rates["reference"], strict=True)]
    summary = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "members": args.members,
        "batch_size": int(cfg.data.batch_size),
        "reference_img_s": round(median["reference"], 1),
        "single_img_s": round(median["single"], 1),
        "sequential_member_img_s": round(median["sequential"], 1),
        "sequential_runs_timed": len(alone),
        "pack_member_img_s": round(median["pack"], 1),
        "single_vs_reference": round(statistics.median(paired), 3),  # the median of each round's ratio
        "single_vs_reference_rounds": [round(x, 3) for x in paired],
        "pack_vs_sequential": round(median["pack"] / median["sequential"], 2),
        "pack_vs_single": round(median["pack"] / median["single"], 2),
        "pack_vs_reference": round(median["pack"] / median["reference"], 2),
        "single_it_s": round(median["single"] / images, 1),
        "pack_it_s": round(median["pack"] / images / args.members, 2),
        "rounds": {k: [round(x, 1) for x in v] for k, v in rates.items()},
        "timed_iterations": {
            "reference": args.iters,
            "single": args.iters,
            "sequential": pack_iters,
            "pack": pack_iters,
        },
        "float32_matmul_precision": str(cfg.get("float32_matmul_precision", "highest")),
        "cuda_graphs": "on" if eager_too else "off (eager)",
    }
    if eager_too:
        summary.update(
            single_eager_img_s=round(median["single_eager"], 1),
            pack_eager_member_img_s=round(median["pack_eager"], 1),
            single_eager_vs_reference=round(median["single_eager"] / median["reference"], 3),
            pack_vs_eager_pack=round(median["pack"] / median["pack_eager"], 2),
            single_vs_eager_single=round(median["single"] / median["single_eager"], 2),
        )
    print(
        f"{summary['device']}: bare loop {summary['reference_img_s']:.0f} img/s; single run "
        f"{summary['single_img_s']:.0f} img/s ({summary['single_vs_reference']:.2f} of the bare loop); "
        f"the pack's members run alone one after another: {summary['sequential_member_img_s']:.0f} member-img/s; "
        f"pack of {args.members}: "
        f"{summary['pack_member_img_s']:.0f} member-img/s ({summary['pack_vs_sequential']:.2f}x sequential runs, "
        f"{summary['pack_vs_single']:.1f}x the single run, {summary['pack_it_s']} it/s)"
    )
    if eager_too:
        print(
            f"CUDA graphs: pack {summary['pack_member_img_s']:.0f} against {summary['pack_eager_member_img_s']:.0f} "
            f"member-img/s eager ({summary['pack_vs_eager_pack']:.2f}x); single run {summary['single_img_s']:.0f} "
            f"against {summary['single_eager_img_s']:.0f} img/s eager ({summary['single_vs_eager_single']:.2f}x)"
        )
    print(json.dumps(summary))
    return summary


def cli() -> None:
    """The ``gan-bench`` console script: ``main`` without its return value, which a console script would pass to
    ``sys.exit`` (a dict there prints itself to stderr and exits 1)."""
    main()


if __name__ == "__main__":
    cli()
