"""Two small image generators, trained by the project on real photo crops, on the CPU.

The detector needs AI-generated images and no package ships any, so the project makes its
own from two different families, as Wang et al. (2020) trained their detector on one
generator's output and tested it on others:

- a DCGAN (Radford et al. 2016): a generator of transposed convolutions and batch norm,
  trained adversarially. The discriminator is stabilised as small-data GANs need: spectral
  normalisation and no batch norm (Miyato et al. 2018), the hinge loss, Adam with betas
  (0, 0.9), and differentiable augmentation of real and generated images alike (Zhao et al.
  2020, DiffAugment: brightness, saturation, contrast, translation), without which its
  discriminator memorises the crops of 14 photographs and wins within a few hundred steps;
- a convolutional VAE (Kingma and Welling 2014): an encoder, a decoder, a reconstruction
  plus KL loss; its samples are the decoder's output for latent codes drawn from N(0, I).

Both work at 64x64 and are deliberately narrow (24-32 base channels), so each trains in a
few minutes on two cores. Their images are far from photographs; ``docs/detector.md`` shows
them and says so.

This is the only module that imports torch (the ``train`` extra, ``.venv-train``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.nn.utils import spectral_norm

SIZE = 64


def seed_everything(seed: int, threads: int) -> None:
    """Make torch's draws and kernels repeatable, and bound its threads."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 → (N, 3, H, W) float in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
    return tensor.float().div(127.5).sub(1.0)


def to_pixels(tensor: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] → (N, H, W, 3) uint8, rounded."""
    scaled = tensor.detach().clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    pixels: np.ndarray = scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return pixels


class Generator(nn.Module):
    """DCGAN generator: a latent vector up to 64x64 RGB through four stride-2 steps."""

    def __init__(self, latent: int, width: int) -> None:
        super().__init__()
        self.latent = latent

        def up(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(True),
            ]

        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent, width * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width * 8),
            nn.ReLU(True),
            *up(width * 8, width * 4),
            *up(width * 4, width * 2),
            *up(width * 2, width),
            nn.ConvTranspose2d(width, 3, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images for latent codes ``z`` of shape (N, latent)."""
        out: torch.Tensor = self.net(z[:, :, None, None])
        return out


class Discriminator(nn.Module):
    """64x64 RGB down to one score: spectrally normalised convolutions, no batch norm."""

    def __init__(self, width: int) -> None:
        super().__init__()

        def down(c_in: int, c_out: int) -> list[nn.Module]:
            return [spectral_norm(nn.Conv2d(c_in, c_out, 4, 2, 1)), nn.LeakyReLU(0.2, True)]

        self.net = nn.Sequential(
            *down(3, width),
            *down(width, width * 2),
            *down(width * 2, width * 4),
            *down(width * 4, width * 8),
            spectral_norm(nn.Conv2d(width * 8, 1, 4, 1, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One score per image."""
        out: torch.Tensor = self.net(x).flatten()
        return out


def diff_augment(x: torch.Tensor, draws: torch.Generator, shift: int = SIZE // 8) -> torch.Tensor:
    """DiffAugment's colour and translation policies, differentiable in ``x``.

    Per image: brightness +-0.5, saturation x0-2, contrast x0.5-1.5 (on the [-1, 1] scale),
    then a shift of up to ``shift`` pixels each way with zero padding. The discriminator
    only ever sees augmented images, real and generated alike, so the augmentation does not
    leak into the generator's output (Zhao et al. 2020).
    """
    n = x.shape[0]
    x = x + (torch.rand(n, 1, 1, 1, generator=draws) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, generator=draws) * 2) + mean
    mean = x.mean([1, 2, 3], keepdim=True)
    x = (x - mean) * (torch.rand(n, 1, 1, 1, generator=draws) + 0.5) + mean
    dx = torch.randint(-shift, shift + 1, (n,), generator=draws)
    dy = torch.randint(-shift, shift + 1, (n,), generator=draws)
    padded = functional.pad(x, (shift, shift, shift, shift))
    side = torch.arange(x.shape[-1])
    rows = (side[None, :] + dy[:, None] + shift)[:, :, None]
    columns = (side[None, :] + dx[:, None] + shift)[:, None, :]
    shifted: torch.Tensor = padded[torch.arange(n)[:, None, None], :, rows, columns]
    return shifted.permute(0, 3, 1, 2)


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales.

    Applied to the generator only; the spectrally normalised discriminator keeps torch's
    default initialisation.
    """
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class VAE(nn.Module):
    """Convolutional VAE at 64x64: four stride-2 convolutions down, four transposed up."""

    def __init__(self, latent: int, width: int) -> None:
        super().__init__()
        self.latent = latent
        self.width = width

        def down(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]

        def up(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU()]

        self.encoder = nn.Sequential(
            *down(3, width),
            *down(width, width * 2),
            *down(width * 2, width * 4),
            *down(width * 4, width * 8),
            nn.Flatten(),
        )
        flat = width * 8 * 4 * 4
        self.to_mean = nn.Linear(flat, latent)
        self.to_log_var = nn.Linear(flat, latent)
        self.from_latent = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(
            *up(width * 8, width * 4),
            *up(width * 4, width * 2),
            *up(width * 2, width),
            nn.ConvTranspose2d(width, 3, 4, 2, 1),
            nn.Tanh(),
        )

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images for latent codes ``z``."""
        hidden = self.from_latent(z).view(-1, self.width * 8, 4, 4)
        out: torch.Tensor = self.decoder(hidden)
        return out

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruction, posterior mean and log-variance."""
        hidden = self.encoder(x)
        mean, log_var = self.to_mean(hidden), self.to_log_var(hidden).clamp(-10.0, 10.0)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * log_var)
        return self.decode(z), mean, log_var


@dataclass(frozen=True)
class GeneratorConfig:
    """Size and schedule of one generator's training run."""

    steps: int
    batch: int = 64
    latent: int = 100
    width: int = 16
    learning_rate: float = 2e-4


@dataclass
class TrainLog:
    """What a training run reports: its duration and loss trajectory."""

    seconds: float
    parameters: int
    losses: list[tuple[int, float, float]]


Sampler = Callable[[int, int], np.ndarray]
"""``sampler(count, seed)`` → (count, 64, 64, 3) uint8 images."""


def _batches(
    data: torch.Tensor, batch: int, steps: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Batches drawn with replacement; all indices drawn up front, batches built lazily."""
    indices = torch.randint(0, data.shape[0], (steps, batch), generator=generator)
    for row in indices:
        yield data[row]


def train_dcgan(
    pixels: np.ndarray,
    config: GeneratorConfig,
    seed: int,
    log_every: int = 200,
    generator: nn.Module | None = None,
) -> tuple[Sampler, TrainLog]:
    """Train a DCGAN on ``pixels`` (N, 64, 64, 3); return its sampler and log.

    ``generator`` replaces the transposed-convolution generator (same latent input, 64x64
    output): the benchmark trains GANs that differ only in how they upsample. Hinge loss,
    one discriminator step per generator step, both on DiffAugment-ed images; the logged
    losses are the discriminator's hinge loss (2 when it cannot tell the classes apart at all,
    0 when it separates them by a margin) and the generator's -D(G(z)).
    """
    torch.manual_seed(seed)
    data = to_tensor(pixels)
    draws = torch.Generator().manual_seed(seed)
    gen = Generator(config.latent, config.width) if generator is None else generator
    disc = Discriminator(config.width)
    gen.apply(_dcgan_init)
    opt_g = torch.optim.Adam(gen.parameters(), config.learning_rate, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), config.learning_rate, betas=(0.0, 0.9))
    losses: list[tuple[int, float, float]] = []
    started = time.perf_counter()
    for step, real in enumerate(_batches(data, config.batch, config.steps, draws), 1):
        z = torch.randn(config.batch, config.latent, generator=draws)
        fake = gen(z)
        opt_d.zero_grad()
        loss_d = (
            functional.relu(1.0 - disc(diff_augment(real, draws))).mean()
            + functional.relu(1.0 + disc(diff_augment(fake.detach(), draws))).mean()
        )
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        loss_g = -disc(diff_augment(fake, draws)).mean()
        loss_g.backward()
        opt_g.step()
        if step % log_every == 0 or step == config.steps:
            losses.append((step, loss_d.item(), loss_g.item()))
            print(f"  dcgan step {step}: D {losses[-1][1]:.3f} G {losses[-1][2]:.3f}", flush=True)
    seconds = time.perf_counter() - started
    gen.eval()

    def sample(count: int, sample_seed: int) -> np.ndarray:
        rng = torch.Generator().manual_seed(sample_seed)
        with torch.no_grad():
            z = torch.randn(count, config.latent, generator=rng)
            return np.concatenate([to_pixels(gen(chunk)) for chunk in z.split(256)])

    parameters = sum(p.numel() for p in gen.parameters())
    return sample, TrainLog(seconds, parameters, losses)


def train_vae(
    pixels: np.ndarray, config: GeneratorConfig, seed: int, log_every: int = 200
) -> tuple[Sampler, TrainLog]:
    """Train a VAE on ``pixels`` (N, 64, 64, 3); return its sampler (prior draws) and log."""
    model, log = fit_vae(pixels, config, seed, log_every)

    def sample(count: int, sample_seed: int) -> np.ndarray:
        rng = torch.Generator().manual_seed(sample_seed)
        with torch.no_grad():
            z = torch.randn(count, config.latent, generator=rng)
            return np.concatenate([to_pixels(model.decode(chunk)) for chunk in z.split(256)])

    return sample, log


def fit_vae(
    pixels: np.ndarray, config: GeneratorConfig, seed: int, log_every: int = 200
) -> tuple[VAE, TrainLog]:
    """Train a VAE on ``pixels``; return the model (in eval mode) itself and its log.

    The benchmark needs the encoder too: real photographs passed through encode-decode are
    its "aligned" fakes.
    """
    torch.manual_seed(seed)
    data = to_tensor(pixels)
    draws = torch.Generator().manual_seed(seed)
    model = VAE(config.latent, config.width)
    optimiser = torch.optim.Adam(model.parameters(), config.learning_rate)
    losses: list[tuple[int, float, float]] = []
    started = time.perf_counter()
    for step, real in enumerate(_batches(data, config.batch, config.steps, draws), 1):
        reconstruction, mean, log_var = model(real)
        # Sum over pixels, mean over the batch: the ELBO with a Gaussian decoder (sigma 1/2).
        rec = functional.mse_loss(reconstruction, real, reduction="sum") * 2.0 / config.batch
        kl = -0.5 * torch.sum(1 + log_var - mean.pow(2) - log_var.exp()) / config.batch
        optimiser.zero_grad()
        (rec + kl).backward()
        optimiser.step()
        if step % log_every == 0 or step == config.steps:
            losses.append((step, rec.item(), kl.item()))
            print(f"  vae step {step}: rec {losses[-1][1]:.1f} kl {losses[-1][2]:.1f}", flush=True)
    seconds = time.perf_counter() - started
    model.eval()
    parameters = sum(p.numel() for p in model.parameters())
    return model, TrainLog(seconds, parameters, losses)
