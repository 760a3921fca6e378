"""Time of a WGAN-GP generator step, with its n_critic critic steps, against a plain-PyTorch
WGAN-GP of the same networks, in the same run.

The package side is ``[inference] name = "wgan_gp"`` on ``[model] name = "vae"`` (the
decoder is the generator: z_dim 64, ``--hidden`` ReLU layers, Bernoulli means; the story
run by Pyro at every call) with an MLP critic of ``--critic-hidden`` LeakyReLU layers,
Adam 1e-4 β = (0, 0.9), λ = 10, n_critic = 5: one generator step is ``n_critic`` calls of
``inference.step`` (the last one also steps the generator). The reference is the same
algorithm written directly in PyTorch: the very same decoder and critic modules'
architectures (copies of their initial weights), the Adam the package builds (its fused
kernel) with the same settings, so that the ratio is the package's own overhead, ``torch.randn``/``torch.rand`` noise. Both run on the same grey-level MNIST
batches of 64, interleaved generator step by generator step (which goes first alternates),
``--steps`` steps per repeat, ``--repeats`` times, after a few warm-up steps: on a shared
machine the load then hits both alike. Medians of ms per generator step are printed per
repeat and overall, with their ratio, package / reference. Target: <= 1.1.

    python benchmarks/wgan_step_time.py                         # ~1-2 minutes
    python benchmarks/wgan_step_time.py --steps 5 --repeats 1   # seconds (smoke test)
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import common


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=30, help="generator steps per timed block")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--critic-hidden", type=int, nargs="+", default=[512, 512])
    p.add_argument("--batch-size", type=int, default=64)
    common.add_threads(p)
    common.add_data_dir(p)
    args = p.parse_args()
    common.set_threads(args.threads)

    import torch

    from pyro_vae.config import Config
    from pyro_vae.inference.optim import make_optimizer
    from pyro_vae.train import build

    exp = build(Config().with_overrides([
        "data.name=mnist", "data.binarize=none", f"data.batch_size={args.batch_size}", "model.z_dim=64",
        f"model.hidden={args.hidden}", "model.activation=relu", "inference.name=wgan_gp",
        f"inference.critic_hidden={args.critic_hidden}", "eval.num_samples=0",
        *([f'data.data_dir="{args.data_dir}"'] if args.data_dir else [])]), device="cpu")
    inference, n_critic = exp.inference, exp.inference.n_critic
    b, num = args.batch_size, len(exp.data.train)
    batches = [exp.data.train[i * b:(i + 1) * b] for i in range(n_critic * args.steps)]
    index = torch.arange(b)

    # The reference: the same architectures, copies of the same initial weights.
    decoder, critic = copy.deepcopy(exp.module.decoder), copy.deepcopy(inference.critic)
    g_opt = make_optimizer("adam", decoder.parameters(), 1e-4, betas=(0.0, 0.9))  # the optimizer the package builds
    d_opt = make_optimizer("adam", critic.parameters(), 1e-4, betas=(0.0, 0.9))

    def generate(z):
        return torch.sigmoid(decoder.head(decoder.body(z)))

    def reference_step(k: int) -> None:
        for j in range(n_critic):
            real = batches[k * n_critic + j]
            with torch.no_grad():
                fake = generate(torch.randn(b, 64))
            u = torch.rand(b, 1, 1, 1)
            x_hat = (u * real + (1 - u) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
            gp = (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()
            loss = critic(fake).mean() - critic(real).mean() + 10.0 * gp
            d_opt.zero_grad(set_to_none=True)
            loss.backward()
            d_opt.step()
        critic.requires_grad_(False)
        g_loss = -critic(generate(torch.randn(b, 64))).mean()
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        critic.requires_grad_(True)

    def package_step(k: int) -> None:
        for j in range(n_critic):
            inference.step(batches[k * n_critic + j], index, num)

    def timed(step, k: int) -> float:
        started = time.perf_counter()
        step(k)
        return (time.perf_counter() - started) * 1000

    print(common.machine(), "| load", common.load_average())
    for k in range(min(3, args.steps)):  # warm-up
        timed(package_step, k), timed(reference_step, k)
    pkg, ref = [], []
    for r in range(args.repeats):
        for k in range(args.steps):  # interleaved step by step (the order alternating): load drift hits both
            first, second = (package_step, reference_step) if (k + r) % 2 == 0 else (reference_step, package_step)
            a, b_ = timed(first, k), timed(second, k)
            pkg.append(a if first is package_step else b_)
            ref.append(b_ if first is package_step else a)
        mp_r, mr_r = statistics.median(pkg[-args.steps:]), statistics.median(ref[-args.steps:])
        print(f"repeat {r + 1}: package {mp_r:.2f} ms, reference {mr_r:.2f} ms, ratio {mp_r / mr_r:.3f}")
    mp, mr = statistics.median(pkg), statistics.median(ref)
    print(f"\n| generator step (n_critic = {n_critic}) | package ms | reference ms | ratio |\n|---|---|---|---|\n"
          f"| decoder {args.hidden}, critic {args.critic_hidden}, batch {b} | {mp:.2f} | {mr:.2f} | {mp / mr:.3f} |")
    print("load", common.load_average())


if __name__ == "__main__":
    main()
