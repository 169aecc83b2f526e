"""jdeconv's default training step written plainly in PyTorch, and a timing comparison.

The reference (written here from the equations of DESIGN.md §2, not from any paper's code):

* **Network**: the U-Net of ``jdeconv.unet`` with the default ``NetworkConfig`` — 16 base
  channels doubled per level, depth 3, residual blocks of two 3^ndim convolutions (a 1×1
  projection when the channel count changes), LeakyReLU 0.1, no normalisation, 2× average
  pooling down, nearest-neighbour upsampling and a 3^ndim convolution up, concatenated
  skips, a 1×1 head. ``torch.nn.Conv2d``/``Conv3d``, NCHW. Same parameter count (2D
  557 377, 3D 1 626 721); :func:`load_jdeconv_params` copies jdeconv's parameters into it
  and the tests check that both networks then give the same output.
* **Forward model**: mirror extension by half the PSF (edge pixel repeated, as jdeconv's
  ``padding="reflect"``), ``rfftn`` to a fast length, product with the PSF's transfer
  function (computed once), ``irfftn``, crop to 'same'.
* **Masks**: stratified, one pixel per box of side ``round((1/fraction)^(1/ndim))``, the
  pixel replaced by N(0, 0.2) (standardised units).
* **Loss** of the default preset: 2D ``noise2same_d`` = rec + 2 inv_d + 0.1 bound_d, 3D
  ``noise2same`` = rec + 2 inv + 0.1 bound, each term per patch over the interior (patch
  minus half the PSF on each side), then averaged over the batch; bounds ±3 as
  ``benchmarks/train_step.py``.
* **Step**: random crops of the standardised image with rot90/flip augmentation, one mask
  per patch, both passes in one network call on the stacked batch, backward, global-norm
  clipping at 1, Adam with warm-up + cosine schedule (``jdeconv.train.make_optimizer``'s).

The comparison (one process, the same image, PSF and shapes as ``train_step.py``): the
default 2D step (on a CPU batch 16 × 64², on a GPU 16 × 128²; SSI 17² PSF, 256² image)
and 3D step (CPU batch 2 × 32×48×48, GPU 4 × 64³; 17³ Gibson-Lanni PSF, 64×128×128),
jdeconv's jitted step (compiled ahead of
time, compile time reported apart) against the PyTorch step, with
``torch.set_num_threads`` equal to the cores this process may use (run it under
``taskset`` to choose). Timing follows ``benchmarks/_timing.py``: the first call of each
is a warm-up and not counted, samples in rounds with rotation, medians; the ratio
jdeconv/PyTorch also by A/B alternation (median of per-pair ratios).

Time to quality (``--quality-image``, default Drosophila): the papers' degradation of
the 256² centre crop (``paper_2d.py``), the Richardson-Lucy oracle's PSNR, and the
training seconds ``jdeconv.fit``'s default config needs to reach it (PSNR checked at
every validation, every 25 steps; the checks' own time is not counted). With
``--torch-quality jdeconv torch`` the PyTorch reference trains the same way (same
schedule, same test-time augmentation, no held-out pixels), starting from jdeconv's
initial parameters and/or PyTorch's default initialisation.

Usage (needs the ``peers`` extra: ``pip install -e '.[peers]'``)::

    # one thread each, as in the committed results (~25 min on a busy 2-core CPU)
    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
        python benchmarks/torch_reference.py --threads 1 --torch-quality jdeconv torch
    python benchmarks/torch_reference.py --quick --no-quality          # seconds (tests)
    # on a GPU (JAX with CUDA; PyTorch on the same GPU; Config.default's GPU sizes)
    python benchmarks/torch_reference.py --torch-device cuda --torch-quality jdeconv

Writes ``peers-torch-<device>[-tag].md`` and ``.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import scipy.fft

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402  (first: puts this checkout on sys.path before jdeconv)
import _timing as T  # noqa: E402
import jax  # noqa: E402

from jdeconv import Config  # noqa: E402
from jdeconv.devices import usable_cores  # noqa: E402
from jdeconv.losses import PRESETS  # noqa: E402
from jdeconv.masks import box_size  # noqa: E402
from jdeconv.psf import gaussian_psf  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError:  # the peers extra is optional: the argument parsing works without it
    torch = F = nn = None

NAME = "peers-torch"
BOUNDS = (-3.0, 3.0)  # as benchmarks/train_step.py (fit takes them from the input's range)
CUDA_WARMUP_STEPS = 3  # untimed PyTorch steps on a GPU before the timing
TORCH_MISSING = "PyTorch is not installed: pip install -e '.[peers]' (torch>=2.1)"


def require_torch() -> None:
    if torch is None:
        raise SystemExit(TORCH_MISSING)


# --------------------------------------------------------------------------- network


def _module_base():
    return nn.Module if nn is not None else object


class TorchBlock(_module_base()):
    """Two 3^ndim convolutions, LeakyReLU, residual (1×1 projection if channels change)."""

    def __init__(self, cin: int, cout: int, conv, slope: float):
        super().__init__()
        self.conv1 = conv(cin, cout, 3, padding=1)
        self.conv2 = conv(cout, cout, 3, padding=1)
        self.proj = conv(cin, cout, 1) if cin != cout else None
        self.slope = slope

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), self.slope)
        h = self.conv2(h)
        h = h + (self.proj(x) if self.proj is not None else x)
        return F.leaky_relu(h, self.slope)


class TorchUNet(_module_base()):
    """jdeconv's default U-Net, NCHW/NCDHW: ``(B, 1, *spatial) -> (B, 1, *spatial)``."""

    def __init__(self, ndim: int, *, base_channels: int = 16, depth: int = 3, slope=0.1):
        super().__init__()
        conv = nn.Conv2d if ndim == 2 else nn.Conv3d
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.ndim, self.multiple = ndim, 2**depth
        self.encoders = nn.ModuleList(
            TorchBlock(1 if i == 0 else chans[i - 1], chans[i], conv, slope) for i in range(depth)
        )
        self.bottom = TorchBlock(chans[-2], chans[-1], conv, slope)
        self.ups = nn.ModuleList(
            conv(chans[i + 1], chans[i], 3, padding=1) for i in reversed(range(depth))
        )
        self.decoders = nn.ModuleList(
            TorchBlock(2 * chans[i], chans[i], conv, slope) for i in reversed(range(depth))
        )
        self.head = conv(chans[0], 1, 1)

    def forward(self, x):
        if any(s % self.multiple for s in x.shape[2:]):
            raise ValueError(f"spatial sizes must be multiples of {self.multiple}: {x.shape}")
        pool = F.avg_pool2d if self.ndim == 2 else F.avg_pool3d
        skips, h = [], x
        for enc in self.encoders:
            h = enc(h)
            skips.append(h)
            h = pool(h, 2)
        h = self.bottom(h)
        for up, dec, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            h = up(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = dec(torch.cat([h, skip], dim=1))
        return self.head(h)


def count_params(net) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def load_jdeconv_params(net, params) -> None:
    """Copy jdeconv U-Net parameters (an ``nnx.State``) into a :class:`TorchUNet`.

    Kernels go from jdeconv's (spatial..., in, out) layout to PyTorch's (out, in,
    spatial...); every parameter of either side must be matched.
    """
    own = dict(net.named_parameters())
    done = set()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
        keys = [str(k) for k in keys if k not in (None, "value")]
        name = ".".join(keys[:-1] + ["weight" if keys[-1] == "kernel" else keys[-1]])
        value = np.asarray(leaf, np.float32)
        if keys[-1] == "kernel":
            value = np.moveaxis(value, (-1, -2), (0, 1))
        if name not in own or tuple(own[name].shape) != value.shape:
            raise ValueError(f"no PyTorch parameter {name} of shape {value.shape}")
        with torch.no_grad():
            own[name].copy_(torch.from_numpy(np.array(value, copy=True)))
        done.add(name)
    missing = sorted(set(own) - done)
    if missing:
        raise ValueError(f"PyTorch parameters not set from jdeconv's: {missing}")


# --------------------------------------------------------------------------- forward model


class TorchBlur:
    """``g(z) = psf * z`` on a batch ``(B, *shape)``: mirror extension, FFT, crop 'same'."""

    def __init__(self, psf: np.ndarray, shape, *, device="cpu"):
        psf = np.asarray(psf, np.float64)
        self.half = tuple(k // 2 for k in psf.shape)
        self.shape = tuple(shape)
        self.fft_shape = tuple(
            scipy.fft.next_fast_len(n + 2 * h, real=True)
            for n, h in zip(shape, self.half, strict=True)
        )
        # The kernel's centre at index 0 of the FFT grid: a centred convolution.
        kernel = np.zeros(self.fft_shape)
        kernel[tuple(slice(0, k) for k in psf.shape)] = psf
        kernel = np.roll(kernel, [-h for h in self.half], axis=tuple(range(psf.ndim)))
        self.otf = torch.from_numpy(np.fft.rfftn(kernel).astype(np.complex64)).to(device)
        self.dims = tuple(range(-psf.ndim, 0))

    def extend(self, z):
        """Mirror each spatial axis by half the PSF, edge pixel repeated (d c b a|a b c d)."""
        for dim, h in zip(self.dims, self.half, strict=True):
            if h:
                n = z.shape[dim]
                lo = torch.flip(z.narrow(dim, 0, h), (dim,))
                hi = torch.flip(z.narrow(dim, n - h, h), (dim,))
                z = torch.cat([lo, z, hi], dim=dim)
        return z

    def __call__(self, z):
        spectrum = torch.fft.rfftn(self.extend(z), s=self.fft_shape, dim=self.dims)
        out = torch.fft.irfftn(spectrum * self.otf, s=self.fft_shape, dim=self.dims)
        window = tuple(slice(h, h + n) for h, n in zip(self.half, self.shape, strict=True))
        return out[(Ellipsis, *window)]


# --------------------------------------------------------------------------- data


def sample_patches(gen, image, batch: int, patch_shape):
    """Random crops of ``image`` (a tensor), rot90 in YX and flips (Y in 2D, all in 3D)."""
    ndim = image.ndim
    out = []
    for _ in range(batch):
        starts = [
            int(torch.randint(0, n - p + 1, (), generator=gen))
            for n, p in zip(image.shape, patch_shape, strict=True)
        ]
        patch = image[tuple(slice(s, s + p) for s, p in zip(starts, patch_shape, strict=True))]
        patch = torch.rot90(patch, int(torch.randint(0, 4, (), generator=gen)), dims=(-2, -1))
        flips = torch.rand(ndim, generator=gen) < 0.5
        axes = [a for a in (range(ndim) if ndim == 3 else (0,)) if flips[a]]
        if axes:
            patch = torch.flip(patch, axes)
        out.append(patch)
    return torch.stack(out)


def stratified_masks(gen, batch: int, shape, *, fraction: float):
    """One masked pixel at a random place in each box of side ``box_size(fraction)``, made
    on the generator's device."""
    side = box_size(fraction, len(shape))
    device = gen.device
    index = [torch.arange(batch, device=device).view(-1, *([1] * len(shape)))]
    counts = [math.ceil(n / side) for n in shape]
    for axis, n in enumerate(shape):
        origin = torch.arange(counts[axis], device=device) * side
        extent = torch.clamp(n - origin, max=side)  # boxes cut by the border
        view = [1] * len(shape)
        view[axis] = -1
        offset = torch.rand(batch, *counts, generator=gen, device=device)
        offset = (offset * extent.view(1, *view)).long()
        index.append(origin.view(1, *view) + offset)
    mask = torch.zeros(batch, *shape, dtype=torch.bool, device=device)
    mask[tuple(torch.broadcast_tensors(*index))] = True
    return mask


# --------------------------------------------------------------------------- loss


def _masked_mse(a, b, mask):
    w = mask.to(a.dtype)
    dims = tuple(range(1, a.ndim))
    return (w * (a - b) ** 2).sum(dims) / w.sum(dims).clamp_min(1.0)


def _safe_sqrt(x):
    positive = x > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, x, torch.ones_like(x))), 0.0)


def _out_of_bounds(x, lower, upper):
    return (F.relu(lower - x) + F.relu(x - upper)).flatten(1).mean(1)


def loss_terms(net, blur, patches, masked, mask, *, preset: str, border, bounds=BOUNDS):
    """Both passes, the blur and the preset's terms; ``(total, {term: value})``.

    Each term is computed per patch over the interior (``border`` pixels cropped from
    each side) and averaged over the batch, as ``jdeconv.losses.Loss``.
    """
    weights = PRESETS[preset]
    b = patches.shape[0]
    both = net(torch.cat([patches, masked]).unsqueeze(1)).squeeze(1)
    deconvolved, deconvolved_masked = both[:b], both[b:]
    window = (
        slice(None),
        *(slice(k, n - k) for k, n in zip(border, patches.shape[1:], strict=True)),
    )

    def crop(a):
        return a[window]

    image, m = crop(patches), crop(mask)
    lower, upper = bounds
    terms = {}
    reconvolved = crop(blur(deconvolved)) if {"rec", "inv", "bound"} & set(weights) else None
    if "rec" in weights:
        terms["rec"] = ((reconvolved - image) ** 2).flatten(1).mean(1)
    if "inv" in weights:
        reconvolved_masked = crop(blur(deconvolved_masked))
        terms["inv"] = _safe_sqrt(_masked_mse(reconvolved, reconvolved_masked, m))
    if "inv_d" in weights:
        terms["inv_d"] = _safe_sqrt(_masked_mse(crop(deconvolved), crop(deconvolved_masked), m))
    if "bound" in weights:
        terms["bound"] = _out_of_bounds(reconvolved, lower, upper)
    if "bound_d" in weights:
        terms["bound_d"] = _out_of_bounds(crop(deconvolved), lower, upper)
    unknown = set(weights) - set(terms)
    if unknown:
        raise ValueError(f"the PyTorch reference has no term {sorted(unknown)}")
    terms = {k: v.mean() for k, v in terms.items()}
    return sum(weights[k] * v for k, v in terms.items()), terms


def warmup_cosine(cfg: Config):
    """``make_optimizer``'s schedule as a multiplier of the peak rate, by update count."""
    o = cfg.optim
    warmup = min(o.warmup_steps, max(cfg.steps - 1, 0))
    decay = max(cfg.steps, 1)

    def factor(t: int) -> float:
        if t < warmup:
            return 0.01 + 0.99 * t / warmup
        frac = min(t - warmup, decay - warmup) / max(decay - warmup, 1)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * frac))

    return factor


class TorchTrainer:
    """The PyTorch reference step on one standardised image: ``trainer.step()``."""

    def __init__(
        self,
        cfg: Config,
        image: np.ndarray,
        psf: np.ndarray,
        *,
        seed: int = 0,
        init="jdeconv",
        device="cpu",
    ):
        """``init``: "jdeconv" starts from ``init_unet(seed)``'s parameters (truncated
        LeCun normal), "torch" from PyTorch's default initialisation. ``device``: where
        the network, the image, the masks and the noise live ("cpu", "cuda"); patch
        positions and flips are drawn on the host either way (no device synchronisation)."""
        ndim = image.ndim
        if cfg.optim.optimizer != "adam" or cfg.optim.schedule != "cosine":
            raise ValueError("the PyTorch reference implements Adam with the cosine schedule")
        n = cfg.network
        if n.norm != "none" or not n.residual or n.dtype != "float32":
            raise ValueError("the PyTorch reference implements norm='none', residual, float32")
        if cfg.masks.kind != "stratified" or cfg.masks.replacement != "noise":
            raise ValueError("the PyTorch reference implements stratified masks, noise fill")
        torch.manual_seed(seed)
        self.cfg, self.preset = cfg, cfg.name
        self.net = TorchUNet(ndim, base_channels=n.base_channels, depth=n.depth)
        if init == "jdeconv":
            from jdeconv.unet import init_unet

            load_jdeconv_params(self.net, init_unet(seed, cfg.unet(ndim))[1])
        elif init != "torch":
            raise ValueError(f"init must be 'jdeconv' or 'torch', got {init!r}")
        self.init = init
        self.device = torch.device(device)
        self.net.to(self.device)
        self.patch_shape = cfg.patch_shape(ndim)
        self.blur = TorchBlur(psf, self.patch_shape, device=self.device)
        self.border = tuple(k // 2 for k in psf.shape) if cfg.crop_border else (0,) * ndim
        self.image = torch.from_numpy(np.array(image, np.float32, copy=True)).to(self.device)
        self.gen = torch.Generator().manual_seed(seed)
        # Masks and noise on the device (on the CPU: the same generator as before).
        self.device_gen = (
            self.gen
            if self.device.type == "cpu"
            else torch.Generator(device=self.device).manual_seed(seed)
        )
        self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.optim.learning_rate)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_cosine(cfg))

    def step(self):
        """One training step; returns the loss as a 0-d tensor on the device (not
        ``float()``-ed: that would wait for the device on every step)."""
        cfg, b = self.cfg, self.cfg.batch_size
        patches = sample_patches(self.gen, self.image, b, self.patch_shape)
        mask = stratified_masks(self.device_gen, b, self.patch_shape, fraction=cfg.masks.fraction)
        noise = torch.randn(patches.shape, generator=self.device_gen, device=self.device)
        noise = cfg.masks.noise_std * noise
        masked = torch.where(mask, noise, patches)
        self.opt.zero_grad(set_to_none=True)
        total, _ = loss_terms(
            self.net, self.blur, patches, masked, mask, preset=self.preset, border=self.border
        )
        total.backward()
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.optim.grad_clip)
        self.opt.step()
        self.sched.step()
        return total.detach()

    def synchronize(self) -> None:
        """Wait for the device's queued work (nothing to wait for on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def predict(self, x: np.ndarray, *, tta: bool = True) -> np.ndarray:
        """The network on a standardised 2D image, averaged over the 8 symmetries."""
        t = torch.from_numpy(np.array(x, np.float32, copy=True))[None, None].to(self.device)
        views = [(k, f) for k in range(4) for f in (False, True)] if tta else [(0, False)]
        out = torch.zeros_like(t)
        with torch.no_grad():
            for k, flip in views:
                v = torch.rot90(t, k, dims=(-2, -1))
                v = torch.flip(v, (-2,)) if flip else v
                y = self.net(v)
                y = torch.flip(y, (-2,)) if flip else y
                out += torch.rot90(y, -k, dims=(-2, -1))
        return (out / len(views))[0, 0].cpu().numpy()


# --------------------------------------------------------------------------- step timing


class _Ready:
    """What ``_timing.timed`` waits on: ``block_until_ready()``."""

    def __init__(self, wait=None):
        self._wait = wait

    def block_until_ready(self):
        if self._wait is not None:
            self._wait()
        return self


def jdeconv_runner(cfg: Config, psf: np.ndarray, image_shape):
    """jdeconv's jitted default step (as train_step.py builds it), its compile time, the
    parameter count and the image it trains on; each call of the runner is one step."""
    from train_step import build_step  # the step exactly as jdeconv.fit builds it

    conv3d = "stacked" if len(image_shape) == 3 else None
    args, step, state = build_step(cfg, psf, image_shape, method="fft", conv3d=conv3d)
    t0 = time.perf_counter()
    compiled = step.lower(*args(state)).compile()
    compile_s = time.perf_counter() - t0
    holder = [state]
    image = np.asarray(args(state)[2])
    n_params = sum(int(p.size) for p in jax.tree.leaves(state.params))

    def run():
        holder[0], _ = compiled(*args(holder[0]))
        return _Ready(lambda: jax.block_until_ready(holder[0]))

    return run, compile_s, n_params, image


def torch_runner(cfg: Config, psf: np.ndarray, image: np.ndarray, *, device="cpu"):
    trainer = TorchTrainer(cfg, image, psf, device=device)
    if trainer.device.type == "cuda":
        # cuDNN's autotuning (cudnn.benchmark) runs in the first steps and took 17.7 s on an
        # H100: outside the timing, as jdeconv's compilation is.
        for _ in range(CUDA_WARMUP_STEPS):
            trainer.step()
        trainer.synchronize()

    def run():
        trainer.step()
        return _Ready(trainer.synchronize)

    return run, count_params(trainer.net)


def time_case(name: str, cfg: Config, psf, image_shape, args) -> dict:
    ja, compile_s, n_jax, image = jdeconv_runner(cfg, psf, image_shape)
    tb, n_torch = torch_runner(cfg, psf, image, device=args.torch_device)
    timing = T.measure_point(
        {"jdeconv": ja, "pytorch": tb},
        (),
        repeats=args.repeats,
        budget=args.budget,
        min_sample=args.min_sample,
    )
    ab = T.ab_ratio(ja, tb, (), pairs=args.pairs, half=args.min_sample, budget=args.budget)
    rec = {
        "case": name,
        "preset": cfg.name,
        "loss": dict(cfg.loss_weights),
        "image": list(image_shape),
        "patch": list(cfg.patch_shape(len(image_shape))),
        "batch": cfg.batch_size,
        "psf": list(psf.shape),
        "params_jdeconv": n_jax,
        "params_pytorch": n_torch,
        "jdeconv_compile_s": compile_s,
    }
    for who in ("jdeconv", "pytorch"):
        t = timing[who]
        rec[who] = {
            k: t[k] for k in ("min_s", "median_s", "times_s", "repeats", "calls_per_sample")
        }
    rec["ratio_median"] = rec["jdeconv"]["median_s"] / rec["pytorch"]["median_s"]
    rec["ratio_ab"] = None if ab is None else ab["ratio"]
    rec["ab"] = ab
    print(
        f"{name}: params {n_jax} / {n_torch}; jdeconv {rec['jdeconv']['median_s']:.3f} s "
        f"(compile {compile_s:.1f} s), PyTorch {rec['pytorch']['median_s']:.3f} s; ratio "
        f"{rec['ratio_median']:.2f} (A/B {C.fmt(rec['ratio_ab'])})",
        flush=True,
    )
    return rec


# --------------------------------------------------------------------------- time to quality


def quality_problem(data: Path, image: str, crop: int, seed: int):
    """The papers' degradation of a centre crop, as paper_2d.py: (gt, noisy, psf, index)."""
    import paper_2d

    from jdeconv.simulate import degrade

    files = paper_2d.list_images(data)
    [(index, path)] = paper_2d.select_images(files, [image])
    gt, _ = paper_2d.load_ground_truth(path, crop)
    psf = np.load(data / paper_2d.PSF_FILE).astype(np.float32)
    noisy = degrade(jax.random.fold_in(jax.random.key(seed), index), gt, psf, normalize=False)
    return gt, np.asarray(noisy), psf, path.stem


def jdeconv_time_to_quality(gt, noisy, psf, target: float, cfg: Config) -> dict:
    """``jdeconv.fit`` with ``cfg``; PSNR at every validation; stops at ``target``."""
    import jdeconv
    from jdeconv.metrics import psnr

    curve, spent = [], [0.0]
    reached = [None]

    def callback(step, _val, deconvolve_fn):
        t0 = time.perf_counter()
        value = psnr(gt, deconvolve_fn(), data_range=C.DATA_RANGE)
        curve.append((step, value))
        spent[0] += time.perf_counter() - t0
        if value >= target and reached[0] is None:
            reached[0] = step
            return True
        return False

    result = jdeconv.fit(noisy, psf, cfg, verbose=False, callback=callback)
    train_s = result.timings["train"] - spent[0]
    final = psnr(gt, result.deconvolved, data_range=C.DATA_RANGE)
    return {
        "system": "jdeconv",
        "reached_step": reached[0],
        "train_s": train_s,
        "seconds_per_step": train_s / result.timings["steps"],
        "steps_run": result.timings["steps"],
        "compile_s": result.timings["compile"],
        "evaluation_s": spent[0],
        "final_psnr": final,
        "curve": curve,
    }


def torch_time_to_quality(
    gt, noisy, psf, target: float, cfg: Config, *, init: str, device="cpu"
) -> dict:
    """The PyTorch reference trained like ``fit`` (no held-out pixels), checked every
    ``cfg.validate_every`` steps with test-time augmentation; stops at ``target``."""
    from jdeconv.metrics import psnr

    offset, scale = float(noisy.mean()), float(noisy.std())
    x = (noisy - offset) / scale
    trainer = TorchTrainer(cfg, x, psf, seed=cfg.seed, init=init, device=device)
    curve, reached, train_s, evaluation_s = [], None, 0.0, 0.0
    every = cfg.validation.every
    for i in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        trainer.step()
        trainer.synchronize()
        train_s += time.perf_counter() - t0
        if i % every == 0 or i == cfg.steps:
            t0 = time.perf_counter()
            value = psnr(gt, trainer.predict(x) * scale + offset, data_range=C.DATA_RANGE)
            evaluation_s += time.perf_counter() - t0
            curve.append((i, value))
            if value >= target:
                reached = i
                break
    return {
        "system": f"pytorch ({init} init)",
        "init": init,
        "reached_step": reached,
        "train_s": train_s,
        "seconds_per_step": train_s / i,
        "steps_run": i,
        "compile_s": None,
        "evaluation_s": evaluation_s,
        "final_psnr": curve[-1][1],
        "curve": curve,
    }


def time_to_quality(args) -> dict:
    gt, noisy, psf, name = quality_problem(args.data, args.quality_image, args.crop, args.seed)
    rl, _ = C.richardson_lucy_oracle(noisy, psf, gt, counts=(5,), n_max=50, border=16)
    target = rl["rl_best"]["psnr"]
    cfg = Config.default(2, **C.parse_overrides(args.overrides))
    print(
        f"time to quality on {name} {gt.shape}: RL oracle {target:.2f} dB (n={rl['rl_best']['n']})",
        flush=True,
    )
    runs = [jdeconv_time_to_quality(gt, noisy, psf, target, cfg)]
    for init in args.torch_quality:
        runs.append(
            torch_time_to_quality(gt, noisy, psf, target, cfg, init=init, device=args.torch_device)
        )
    for r in runs:
        print(
            f"  {r['system']}: reached at step {r['reached_step']} after "
            f"{r['train_s']:.1f} s of training; final {r['final_psnr']:.2f} dB",
            flush=True,
        )
    return {
        "image": name,
        "shape": list(gt.shape),
        "input_psnr": C.score(gt, noisy, border=16)["psnr"],
        "rl_oracle_psnr": target,
        "rl_oracle_n": rl["rl_best"]["n"],
        "config": C.config_record(cfg),
        "runs": runs,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=C.DEFAULT_DATA, help="shared data folder")
    p.add_argument("--out", type=Path, default=C.DEFAULT_OUT)
    p.add_argument("--tag", help=f"file name suffix: {NAME}-<device>-<tag>.md/.json")
    p.add_argument(
        "--cases", nargs="*", default=["2d", "3d"], choices=["2d", "3d"], help="step timings"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: the usable cores)")
    p.add_argument(
        "--torch-device",
        default="cpu",
        help="where the PyTorch reference runs: cpu (default) or cuda (jdeconv runs on JAX's "
        "default device; the cases take Config.default's sizes for that device)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timing samples per system")
    p.add_argument("--pairs", type=int, default=5, help="A/B pairs for the ratio")
    p.add_argument("--budget", type=float, default=90.0, help="seconds per case and protocol")
    p.add_argument("--min-sample", type=float, default=1.0, help="least seconds per sample")
    p.add_argument("--quick", action="store_true", help="tiny shapes and networks (tests)")
    p.add_argument(
        "--no-quality", dest="quality", action="store_false", help="skip the time-to-quality run"
    )
    p.add_argument("--quality-image", default="drosophila", help="SSI image for it")
    p.add_argument("--crop", type=int, default=256, help="centre crop side for it")
    p.add_argument("--seed", type=int, default=0, help="noise seed of the degradation")
    p.add_argument(
        "--torch-quality",
        nargs="*",
        choices=["jdeconv", "torch"],
        default=[],
        help="also train the PyTorch reference to the RL oracle's PSNR, starting from "
        "jdeconv's initial parameters and/or PyTorch's default initialisation",
    )
    C.add_config_override_option(p)
    p.add_argument("--note", default="", help="free text for the results header")
    args = p.parse_args(argv)
    C.parse_overrides(args.overrides)  # fail early on unknown fields
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.torch_device not in ("cpu", "cuda"):
        p.error(f"--torch-device must be cpu or cuda, got {args.torch_device!r}")
    return args


def case_settings(args) -> list[tuple[str, Config, np.ndarray, tuple[int, ...]]]:
    """(name, config, PSF, image shape) of each case, as train_step.py's defaults: the
    sizes of ``Config.default`` for JAX's default device (a CPU's, or a GPU's)."""
    cases = []
    small = dict(batch_size=2, patch_size=16, patch_size_z=16, base_channels=4, depth=2)
    for case in args.cases:
        ndim = int(case[0])
        cfg = Config.default(ndim)
        if args.quick:
            cfg = cfg.replace(**small)
            psf = gaussian_psf((5,) * ndim, 1.0)
            shape = (48, 48) if ndim == 2 else (24, 32, 32)
        else:
            name = "ssi_2d_17.npy" if ndim == 2 else "gl_3d_17.npy"
            path = args.data / "psf" / name
            if not path.is_file():
                raise SystemExit(f"reference PSF not found: {path}; pass --data DIR")
            psf = np.load(path).astype(np.float32)
            shape = (256, 256) if ndim == 2 else (64, 128, 128)
        cases.append((f"{case}-default", cfg, psf, shape))
    return cases


def main(argv=None) -> dict:
    args = parse_args(argv)
    require_torch()
    if args.torch_device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--torch-device cuda: PyTorch sees no CUDA device here")
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its kernels
    cores = usable_cores()
    torch.set_num_threads(args.threads or cores)
    result = {
        "benchmark": NAME,
        "machine": C.machine_info(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_device": args.torch_device,
        "torch_device_name": (
            torch.cuda.get_device_name() if args.torch_device == "cuda" else "cpu"
        ),
        "usable_cores": cores,
        "quick": args.quick,
        "note": args.note,
        "protocol": {
            "repeats": args.repeats,
            "pairs": args.pairs,
            "budget_s": args.budget,
            "min_sample_s": args.min_sample,
        },
        "records": [time_case(*case, args) for case in case_settings(args)],
    }
    if args.quality and not args.quick:
        result["time_to_quality"] = time_to_quality(args)
    tag = "-".join(x for x in (result["machine"]["platform"], args.tag) if x)
    stem = C.output_stem(args.out, NAME, tag)
    C.write_results(stem, result, markdown(result))
    return result


def markdown(result: dict) -> str:
    info = result["machine"]
    lines = [
        f"# jdeconv vs a PyTorch reference of its default training step ({info['platform']})",
        "",
        "Generated by `benchmarks/torch_reference.py`; every number in the `.json`.",
        "",
        *C.machine_lines(info),
        f"- torch {result['torch']} on {result.get('torch_device_name', 'cpu')}, "
        f"{result['torch_threads']} torch threads; "
        f"{result['usable_cores']} usable cores (XLA uses them all unless XLA_FLAGS say "
        f"otherwise); XLA_FLAGS `{info['xla_flags'] or '(none)'}`",
        *([f"- note: {result['note']}"] if result["note"] else []),
    ]
    if result["records"]:
        lines += step_table(result["records"])
    q = result.get("time_to_quality")
    if q:
        lines += quality_table(q)
    return "\n".join(lines) + "\n"


def step_table(records: list[dict]) -> list[str]:
    lines = [
        "",
        "## Seconds per training step (equal network and loss)",
        "",
        "Same image, PSF, patches, batch, network (parameter counts below) and loss in both; "
        "jdeconv's step jitted (compile time apart), PyTorch eager. Medians of samples taken "
        "in rotating rounds after one warm-up call each (`benchmarks/_timing.py`); the ratio "
        "by medians and by A/B alternation. Target (issue 15): ratio ≤ 0.7.",
        "",
    ]
    rows = []
    for r in records:
        j, t = r["jdeconv"], r["pytorch"]
        rows.append(
            [
                r["case"],
                f"{r['preset']}: " + " + ".join(f"{w:g} {k}" for k, w in r["loss"].items()),
                f"{r['batch']}×" + "×".join(map(str, r["patch"])),
                "×".join(map(str, r["psf"])),
                f"{r['params_jdeconv']:,} / {r['params_pytorch']:,}",
                f"{j['median_s']:.3f} ({j['min_s']:.3f})",
                f"{t['median_s']:.3f} ({t['min_s']:.3f})",
                f"{r['ratio_median']:.2f}",
                C.fmt(r["ratio_ab"]),
                f"{r['jdeconv_compile_s']:.1f}",
            ]
        )
    lines += C.table(
        [
            "case",
            "loss",
            "batch×patch",
            "PSF",
            "params jdeconv / PyTorch",
            "jdeconv s/step median (min)",
            "PyTorch s/step median (min)",
            "ratio (medians)",
            "ratio (A/B)",
            "jdeconv compile s",
        ],
        rows,
    )
    return lines


def quality_table(q: dict) -> list[str]:
    lines = [
        "",
        f"## Time to the RL oracle's PSNR ({q['image']}, {q['shape'][0]}² centre crop)",
        "",
        f"The papers' degradation (input {q['input_psnr']:.2f} dB); target: Richardson-"
        f"Lucy at its best iteration count (n={q['rl_oracle_n']}, chosen with the ground "
        f"truth), **{q['rl_oracle_psnr']:.2f} dB**. Default config "
        f"({q['config']['name']}, {q['config']['steps']} steps, batch "
        f"{q['config']['batch_size']} × {q['config']['patch_size']}²), PSNR of the "
        f"test-time-augmented output checked every {q['config']['validate_every']} steps "
        "(the checks' time not counted); training stops when it reaches the target.",
        "",
    ]
    rows = []
    for r in q["runs"]:
        rows.append(
            [
                r["system"],
                str(r["reached_step"]) if r["reached_step"] else f"not in {r['steps_run']}",
                f"{r['train_s']:.1f}",
                f"{r['seconds_per_step']:.3f}",
                C.fmt(r["compile_s"], 1),
                f"{r['final_psnr']:.2f}",
                ", ".join(f"{s}: {v:.2f}" for s, v in r["curve"]),
            ]
        )
    lines += C.table(
        [
            "system",
            "reached at step",
            "training s (to target or end)",
            "s/step",
            "compile s",
            "last PSNR",
            "PSNR by step",
        ],
        rows,
    )
    return lines


if __name__ == "__main__":
    main()
