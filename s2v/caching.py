"""Cache acceleration: diffusers' cache hooks on the transformer, switched on for one run at a time.

Each method reuses work between neighbouring denoising steps instead of recomputing it; all
are diffusers' own (`transformer.enable_cache`). The pipeline enables the chosen one inside
its one-run guard and disables it when the run ends, so every run starts from empty cache
state and a later run without a cache is exactly an uncached run. Settings are diffusers'
documented CogVideoX ones unless the measured table (`bench/cache.py`) says otherwise.

Offered only where they act on CogVideoX: `SeaCacheConfig` has adapters for other model
families only and silently does nothing here, so it is refused, not offered.
"""

from __future__ import annotations

import ast
import io
import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import torch
from diffusers.hooks import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)

from .errors import S2VError

CONFIGS = (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    MagCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)
CACHE_METHODS = ("none", "first-block", "taylorseer", "faster", "pab", "mag")
"""What `--cache` accepts; "none" runs every block at every step (the default, as before caches existed)."""
NOT_ON_COGVIDEOX = {"sea": "diffusers' SeaCache adapts to other model families only: on CogVideoX it does nothing"}
FIRST_BLOCK_THRESHOLD = 0.2
"""First-block cache reuses the other blocks' residual while the first block's changes by less than this share.
diffusers' 0.05 skips nothing on s2v-nano at its 25 steps (0 of 1,200 block runs on 48 items); 0.2 skips 20%
and changes 1/48 colour and 0/48 motion verdicts (`bench/cache.py`)."""
ATTENTION = r"transformer_blocks\.\d+\.attn1"
"""CogVideoX's attention modules, as diffusers' module-name patterns read them."""
TAYLORSEER_INTERVAL = 3
"""TaylorSeer computes every this many steps and extrapolates the attention outputs in between."""
CALIBRATION_REPORT = "MagCache Calibration Results: "
"""How diffusers' MagCache logs a calibration run's ratios (`diffusers.hooks.mag_cache`), read by `calibrate_mag`."""
CALIBRATE_HINT = (
    "`s2v calibrate-mag --subject IMAGE --prompt TEXT --out ratios.json` with the same model flags writes them, "
    "then add `--mag-ratios ratios.json`"
)


def check_cache(method, mag_ratios: list[float] | None) -> None:
    """Refuse a method that cannot run here before any work, naming what is wrong and what to use instead.
    A diffusers cache config passes as it is: the way to try settings other than ours."""
    if isinstance(method, CONFIGS):
        return
    if not isinstance(method, str):
        names = ", ".join(config.__name__ for config in CONFIGS)
        raise S2VError(f"cache takes a method's name or one of diffusers' {names}; not {type(method).__name__}.")
    if method in NOT_ON_COGVIDEOX:
        raise S2VError(f"--cache {method} is not offered: {NOT_ON_COGVIDEOX[method]}.")
    if method not in CACHE_METHODS:
        raise S2VError(f"Unknown --cache {method!r}: use {', '.join(CACHE_METHODS)}.")
    if method == "mag" and not mag_ratios:
        raise S2VError(
            f"--cache mag needs MagCache ratios calibrated for this model, and it has none: {CALIBRATE_HINT} "
            "(from Python: pipe.mag_ratios = s2v.caching.calibrate_mag(pipe, image, prompt, steps)). "
            "Otherwise use another --cache."
        )


def cache_config(
    method, mag_ratios: list[float] | None, steps: int, guided: bool, timestep: Callable[[], torch.Tensor]
):
    """diffusers' config for `method` (None for "none"), which `check_cache` has already accepted. `timestep`
    reads the step being denoised; `guided` says whether each forward carries an unconditional half (FasterCache
    may then skip it)."""
    if isinstance(method, CONFIGS):
        return method
    if method == "none":
        return None
    if method == "first-block":
        return FirstBlockCacheConfig(threshold=FIRST_BLOCK_THRESHOLD)
    if method == "taylorseer":
        return TaylorSeerCacheConfig(
            cache_interval=TAYLORSEER_INTERVAL,
            disable_cache_before_step=3,
            taylor_factors_dtype=torch.float32,
            cache_identifiers=[ATTENTION],  # diffusers' default patterns miss CogVideoX's `attn1`: nothing cached
        )
    if method == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=timestep,
        )
    if method == "faster":
        return FasterCacheConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(-1, 681),
            current_timestep_callback=timestep,
            attention_weight_callback=lambda _: 0.3,
            unconditional_batch_skip_range=5,
            unconditional_batch_timestep_skip_range=(-1, 781),
            tensor_format="BFCHW",
            is_guidance_distilled=not guided,
        )
    return MagCacheConfig(mag_ratios=list(mag_ratios), num_inference_steps=steps)


@contextmanager
def cache_enabled(transformer, config) -> Iterator[None]:
    """The transformer with `config`'s cache for the duration, and without any afterwards, whatever happens."""
    if config is None:
        yield
        return
    transformer.enable_cache(config)
    try:
        yield
    finally:
        transformer.disable_cache()


def calibrate_mag(pipe, image, prompt: str, steps: int, seeds: Sequence[int] = (0, 1, 2)) -> list[float]:
    """MagCache's per-step ratios for this model at `steps`, averaged over one run per seed.

    diffusers' calibration mode runs every block and logs each step's residual-magnitude ratio when a run
    ends; that report is read rather than recomputed, so the numbers are diffusers' own. Its duplicate
    on stdout (meant for copying by hand) is kept out of the caller's output."""
    logger, reports = logging.getLogger("diffusers.hooks.mag_cache"), []
    handler, level, propagate = _CalibrationReports(reports), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # its hook-placement notes and the report, at INFO, stay out of diffusers' stderr
    try:
        with redirect_stdout(io.StringIO()):
            for seed in seeds:
                config = MagCacheConfig(calibrate=True, num_inference_steps=steps)
                pipe(image, prompt, num_inference_steps=steps, seed=seed, output_type="latent", cache=config)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    if len(reports) != len(seeds) or any(len(report) != steps for report in reports):
        raise S2VError(
            f"diffusers reported {len(reports)} MagCache calibrations for {len(seeds)} runs; expected one each."
        )
    return [sum(column) / len(column) for column in zip(*reports, strict=True)]


class _CalibrationReports(logging.Handler):
    def __init__(self, reports: list):
        super().__init__(logging.INFO)
        self.reports = reports

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(CALIBRATION_REPORT):
            self.reports.append([float(value) for value in ast.literal_eval(message.removeprefix(CALIBRATION_REPORT))])


def write_mag_ratios(path: str | Path, ratios: list[float], steps: int, about: dict) -> Path:
    """The ratios as JSON, with the model they were calibrated on (`about`) for whoever reads the file later."""
    path = Path(path)
    path.write_text(json.dumps({**about, "num_inference_steps": steps, "mag_ratios": ratios}, indent=1) + "\n")
    return path


def read_mag_ratios(path: str | Path) -> list[float]:
    """A ratios file `write_mag_ratios` wrote, refused in words when it is missing or not one."""
    path = Path(path)
    if not path.is_file():
        raise S2VError(f"--mag-ratios {path}: no such file; {CALIBRATE_HINT.split(', then')[0]}.")
    try:
        ratios = json.loads(path.read_text())["mag_ratios"]
        ratios = [float(value) for value in ratios]
    except (ValueError, KeyError, TypeError) as error:
        raise S2VError(f"--mag-ratios {path} is not a ratios file from `s2v calibrate-mag` ({error}).") from error
    if not ratios or not all(math.isfinite(value) and value > 0 for value in ratios):
        raise S2VError(f"--mag-ratios {path} holds no usable ratios: it needs positive numbers, one per step.")
    return ratios
