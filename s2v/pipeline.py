"""`S2VPipeline`: subject image + prompt -> video, with reference tokens (METHOD §2-3)."""

from __future__ import annotations

import functools
import math
import secrets
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline
from diffusers.utils import BaseOutput
from PIL import Image

from .caching import cache_config, cache_enabled, check_cache
from .errors import S2VError, S2VWarning
from .model import check_supported, predict
from .numbers import is_whole, real_number, whole_number
from .presets import DEFAULTS_PRESET, PRESETS, Preset
from .subject import SubjectSource, prepare_subject
from .text import REFERENCE_TOKEN, add_reference_token, strip_reference_token, with_reference_token

OUTPUT_TYPES = ("np", "pil", "pt", "latent")
MAX_SIDE = 2048
MAX_SEED = 2**64 - 1
MAX_STEPS = 1000
TRUNCATION_QUOTE = 8
"""Tokens of an over-long prompt's ignored part quoted in the warning."""


@dataclass
class S2VPipelineOutput(BaseOutput):
    """What one generation produced.

    frames: the video (`[F, H, W, 3]` floats in [0, 1] for "np", PIL images for "pil",
        `[F, 3, H, W]` for "pt", latents for "latent"); None when interrupted. For a batch
        (lists of subjects and prompts), one such video per item, stacked for "np" and "pt".
    subject: the subject exactly as the model saw it (after orientation, background
        removal and padding); a list for a batch; None for text-to-video (`image=None`).
    seed: the seed that fixed this run, or None when the caller passed a generator.
    interrupted: True when the run was stopped before its last denoising step.
    """

    frames: np.ndarray | list[Image.Image] | list[list[Image.Image]] | torch.Tensor | None
    subject: Image.Image | list[Image.Image] | None
    seed: int | None
    interrupted: bool


def one_run_at_a_time(call):
    """Serialise calls on one pipeline object: a second thread waits until the first run ends.

    A pipeline keeps per-run state on itself (the interrupt flag, the guidance scale, the
    scheduler's timesteps, a cache's hooks), so two interleaved runs would corrupt each other's
    video and one's interrupt would stop the other. Every caller (the app, the CLI, a library
    user's threads) goes through here, so the guard holds by construction.
    """

    @functools.wraps(call)
    def guarded(self, *args, **kwargs):
        with self._run_lock:
            return call(self, *args, **kwargs)

    return guarded


class S2VPipeline(CogVideoXPipeline):
    """CogVideoX text-to-video with the subject image entering as reference tokens.

    The components are stock diffusers/transformers classes (so LoRA files, offloading,
    quantization and caching work as in `CogVideoXPipeline`); only the denoising input
    differs: the clean reference latent is prepended as latent frame 0 and `<cls>` leads
    the prompt. Guidance is over text only: both branches see the same reference.
    """

    _callback_tensor_inputs = ["latents", "prompt_embeds", "reference"]

    def __init__(self, tokenizer, text_encoder, vae, transformer, scheduler):
        super().__init__(tokenizer, text_encoder, vae, transformer, scheduler)
        check_supported(transformer)
        add_reference_token(tokenizer, text_encoder)
        self.lora_info = None
        """The LoRA `s2v.loading.load_pipeline` loaded (path, rank, alpha, scale), or None: what generate reports."""
        self.preset: Preset = PRESETS[DEFAULTS_PRESET]
        """The settings that suit this model: its sampling defaults (steps, guidance) and subject size. Set by
        `s2v.loading.load_pipeline`; a pipeline built otherwise samples as CogVideoX-5B does."""
        self.mag_ratios: list[float] | None = None
        """This model's calibrated MagCache ratios (`s2v.caching`); without them `cache="mag"` is refused."""
        self._run_lock = threading.Lock()

    @property
    def frame_choices(self) -> list[int]:
        """Frame counts the VAE decodes exactly: 8k+1, from 9 up to the model's limit."""
        return list(range(9, self.transformer.config.sample_frames + 1, 8))

    @one_run_at_a_time
    @torch.no_grad()
    def __call__(
        self,
        image: SubjectSource | list[SubjectSource] | None,
        prompt: str | list[str],
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_frames: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        use_dynamic_cfg: bool = False,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        remove_background: bool = False,
        output_type: str = "np",
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
        callback_on_step_end: Callable[[S2VPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] | tuple[str, ...] = ("latents",),
        cache: str | object = "none",
    ) -> S2VPipelineOutput | tuple:
        """Generate a video of the subject in `image` doing what `prompt` says.

        `image=None` is the model's own text-to-video path, the baseline the method is measured against: no
        reference frame, no `<cls>`, the video at RoPE frames 0..T-1, exactly as `CogVideoXPipeline` samples.

        Lists of subjects and prompts (of one length) generate a batch in one pass, one
        video per pair, from one generator: faster per video where the hardware has room.
        `prompt` gets its `<cls>` prefix here (once, even if typed); `negative_prompt`
        never carries it. Steps and guidance default to the model's preset (`self.preset`), so
        `pipe(image, prompt)` samples as `s2v generate` does. `num_frames` must be 8k+1 (9..49
        for CogVideoX-5B): an even latent-frame count decodes to the wrong length. Height and width must be
        multiples of 16. Pass `seed` or `generator`, not both; with neither, a random
        seed is drawn and returned. A callback that sets `pipe._interrupt = True` stops
        the run at the next step (frames are then None). Calls from several threads run one
        after another, each from a clean state (see `one_run_at_a_time`). `cache` picks one of
        diffusers' cache accelerations (`s2v.caching.CACHE_METHODS`, or a diffusers cache config) for this run.
        """
        # 1. Check every input before any work is done
        config = self.transformer.config
        height = config.sample_height * self.vae_scale_factor_spatial if height is None else height
        width = config.sample_width * self.vae_scale_factor_spatial if width is None else width
        num_frames = config.sample_frames if num_frames is None else num_frames
        negative_prompt = "" if negative_prompt is None else negative_prompt
        steps = self.preset.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance_scale = self.preset.guidance_scale if guidance_scale is None else guidance_scale
        images, prompts, batched = _as_batch(image, prompt)
        referenced = images is not None
        self._check_call_inputs(
            referenced,
            prompts,
            negative_prompt,
            height,
            width,
            num_frames,
            steps,
            guidance_scale,
            seed,
            generator,
            output_type,
            callback_on_step_end_tensor_inputs,
            cache,
        )
        if generator is None:
            seed = secrets.randbelow(2**32) if seed is None else seed  # small enough to show and retype anywhere
            generator = torch.Generator("cpu").manual_seed(seed)
        self._reset_run_state(guidance_scale, attention_kwargs)
        device = self._execution_device
        do_cfg = guidance_scale > 1.0

        # 2. The subjects exactly as the model will see them
        subjects = [
            prepare_subject(
                item, width, height, remove_background=remove_background, subject_size=self.preset.subject_size
            )
            for item in images or ()
        ]

        # 3. Text: `<cls>` leads the prompt when there is a subject, never the negative prompt
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            [_as_typed(text, referenced) for text in prompts],
            strip_reference_token(negative_prompt),
            do_classifier_free_guidance=do_cfg,
            max_sequence_length=config.max_text_seq_length,
            device=device,
        )
        if do_cfg:
            prompt_embeds = torch.cat([negative_prompt_embeds, prompt_embeds], dim=0)

        # 4. Timesteps
        self.scheduler.set_timesteps(steps, device=device)
        timesteps = self.scheduler.timesteps
        self._num_timesteps = len(timesteps)

        # 5. Initial noise for the video latents
        latents = self.prepare_latents(
            len(prompts),
            config.in_channels,
            num_frames,
            height,
            width,
            prompt_embeds.dtype,
            device,
            generator,
        )

        # 6. Clean reference latent, drawn from the run's generator; the same in both CFG branches
        reference = None
        if referenced:
            reference = torch.cat([self.encode_reference(subject, generator) for subject in subjects])
            reference = reference.to(device, prompt_embeds.dtype).repeat(2 if do_cfg else 1, 1, 1, 1, 1)

        # 7. Denoising loop, with this run's cache (if any) switched on for exactly its steps
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, 0.0)
        old_pred_original_sample = None
        acceleration = cache_config(cache, self.mag_ratios, steps, do_cfg, lambda: self.current_timestep)
        with cache_enabled(self.transformer, acceleration), self.progress_bar(total=steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.interrupt:
                    break
                self._current_timestep = t
                latent_input = torch.cat([latents] * 2) if do_cfg else latents
                latent_input = self.scheduler.scale_model_input(latent_input, t)
                with self.transformer.cache_context("cond_uncond"):
                    noise_pred = predict(
                        self.transformer,
                        latent_input,
                        t.expand(latent_input.shape[0]),
                        prompt_embeds,
                        reference,
                        frame_offset=1 if referenced else 0,
                        attention_kwargs=attention_kwargs,
                    ).float()
                if use_dynamic_cfg:
                    self._guidance_scale = 1 + guidance_scale * (
                        (1 - math.cos(math.pi * ((steps - t.item()) / steps) ** 5.0)) / 2
                    )
                if do_cfg:
                    noise_uncond, noise_text = noise_pred.chunk(2)
                    noise_pred = noise_uncond + self.guidance_scale * (noise_text - noise_uncond)
                if isinstance(self.scheduler, CogVideoXDPMScheduler):
                    latents, old_pred_original_sample = self.scheduler.step(
                        noise_pred,
                        old_pred_original_sample,
                        t,
                        timesteps[i - 1] if i > 0 else None,
                        latents,
                        **extra_step_kwargs,
                        return_dict=False,
                    )
                else:
                    latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]
                latents = latents.to(prompt_embeds.dtype)
                if callback_on_step_end is not None:
                    tensors = {"latents": latents, "prompt_embeds": prompt_embeds, "reference": reference}
                    outputs = callback_on_step_end(
                        self, i, t, {name: tensors[name] for name in callback_on_step_end_tensor_inputs}
                    )
                    latents = outputs.pop("latents", latents)
                progress_bar.update()
        self._current_timestep = None
        interrupted = self.interrupt

        # 8. Decode
        if interrupted:
            frames = None
        elif output_type == "latent":
            frames = latents if batched else latents[0]
        else:
            video = self.decode_latents(latents)
            frames = self.video_processor.postprocess_video(video=video, output_type=output_type)
            frames = frames if batched else frames[0]
        self.maybe_free_model_hooks()

        subject = None if not referenced else subjects if batched else subjects[0]
        output = S2VPipelineOutput(frames=frames, subject=subject, seed=seed, interrupted=interrupted)
        return output if return_dict else output.to_tuple()

    def _reset_run_state(self, guidance_scale: float, attention_kwargs: dict | None) -> None:
        """Forget everything an earlier run (finished, interrupted or failed) left on the pipeline."""
        self._guidance_scale = guidance_scale
        self._attention_kwargs = attention_kwargs
        self._current_timestep = None
        self._num_timesteps = None
        self._interrupt = False
        for component in self.components.values():
            if hasattr(component, "_reset_stateful_cache"):  # diffusers' cache hooks, as maybe_free_model_hooks does
                component._reset_stateful_cache()

    def encode_reference(self, subject: Image.Image, generator: torch.Generator) -> torch.Tensor:
        """The subject as a one-frame latent clip `[1, 1, C, h, w]`, scaled by the VAE's factor."""
        latent = self.reference_distribution(subject).sample(generator=generator)
        return latent.permute(0, 2, 1, 3, 4) * self.vae.config.scaling_factor

    def reference_distribution(self, subject: Image.Image):
        """The VAE's posterior for the subject as a one-frame clip (mean and log-variance `[1, C, 1, h, w]`)."""
        pixels = self.video_processor.preprocess(subject, subject.height, subject.width)
        # The execution device, not vae.device: under CPU offload the VAE sits on the CPU until called.
        pixels = pixels.unsqueeze(2).to(self._execution_device, self.vae.dtype)
        # One frame needs no tiling, and tiled encoding can miss the grid by a row.
        tiling, self.vae.use_tiling = self.vae.use_tiling, False
        try:
            return self.vae.encode(pixels).latent_dist
        finally:
            self.vae.use_tiling = tiling

    def _check_call_inputs(
        self,
        referenced,
        prompts,
        negative_prompt,
        height,
        width,
        num_frames,
        num_inference_steps,
        guidance_scale,
        seed,
        generator,
        output_type,
        tensor_inputs,
        cache,
    ) -> None:
        for prompt in prompts:
            if not isinstance(prompt, str) or not strip_reference_token(prompt):
                raise S2VError("Write a prompt describing what the subject should do.")
            self._warn_if_truncated(_as_typed(prompt, referenced), "prompt")
            self._warn_if_unknown(strip_reference_token(prompt))
        if not isinstance(negative_prompt, str):
            raise S2VError("The negative prompt must be text.")
        if REFERENCE_TOKEN in negative_prompt:
            warnings.warn(f"{REFERENCE_TOKEN} was removed from the negative prompt.", S2VWarning)
        self._warn_if_truncated(strip_reference_token(negative_prompt), "negative prompt")
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size
        for name, value in (("height", height), ("width", width)):
            if not is_whole(value, multiple, MAX_SIDE) or value % multiple:
                raise S2VError(
                    f"{name} must be a multiple of {multiple} between {multiple} and {MAX_SIDE}, not {value}."
                )
        max_frames = self.transformer.config.sample_frames
        if not is_whole(num_frames, 9, max_frames) or (num_frames - 1) % 8:
            raise S2VError(
                f"num_frames must be 8k+1 between 9 and {max_frames} (9, 17, 25, ...), not {num_frames}: "
                "other counts decode to the wrong length."
            )
        whole_number(num_inference_steps, "num_inference_steps", 1, MAX_STEPS)
        real_number(guidance_scale, "guidance_scale", 0.0)
        if seed is not None:
            whole_number(seed, "seed", 0, MAX_SEED)
        if seed is not None and generator is not None:
            raise S2VError("Pass either a seed or a generator, not both.")
        if output_type not in OUTPUT_TYPES:
            raise S2VError(f"output_type must be one of {', '.join(OUTPUT_TYPES)}, not {output_type!r}.")
        check_cache(cache, self.mag_ratios)
        if cache != "none" and self.transformer.is_cache_enabled:
            raise S2VError("The transformer already has a cache enabled; disable it, or leave cache at 'none'.")
        unknown = set(tensor_inputs) - set(self._callback_tensor_inputs)
        if unknown:
            raise S2VError(f"Callbacks can receive {self._callback_tensor_inputs}, not {sorted(unknown)}.")

    def _warn_if_unknown(self, text: str) -> None:
        """Name the words the tokenizer can only read as <unk> (the nano model knows only its world's words)."""
        unknown_id = self.tokenizer.unk_token_id
        unknown = [
            word for word in text.split() if unknown_id in self.tokenizer(word, add_special_tokens=False).input_ids
        ]
        if unknown:
            words = ", ".join(unknown)
            warnings.warn(f"The model does not know these words and reads them as unknown: {words}.", S2VWarning)

    def _warn_if_truncated(self, text: str, what: str) -> None:
        """Say where the text is cut, quoting only the start of the ignored part: the user wrote the rest."""
        limit = self.transformer.config.max_text_seq_length
        ids = self.tokenizer(text, add_special_tokens=True).input_ids
        if len(ids) > limit:
            dropped = ids[limit - 1 : -1]
            start = self.tokenizer.decode(dropped[:TRUNCATION_QUOTE], skip_special_tokens=True)
            more = "..." if len(dropped) > TRUNCATION_QUOTE else ""
            warnings.warn(
                f"The {what} is longer than {limit} tokens; its last {len(dropped)} are ignored, from {start!r}{more}",
                S2VWarning,
            )


def _as_typed(prompt: str, referenced: bool) -> str:
    """The prompt as the model reads it: led by `<cls>` with a subject, without one for text-to-video."""
    return with_reference_token(prompt) if referenced else strip_reference_token(prompt)


def _as_batch(image, prompt) -> tuple[list | None, list, bool]:
    """(subjects or None, prompts, whether a batch was asked for); a batch is a list of prompts with a list of
    subjects of one length, or with None (text-to-video)."""
    if image is None:
        prompts = prompt if isinstance(prompt, list) else [prompt]
        if not prompts:
            raise S2VError("A batch needs at least one prompt.")
        return None, prompts, isinstance(prompt, list)
    if isinstance(prompt, list) != isinstance(image, list):
        raise S2VError("For a batch, pass a list of subjects and a list of prompts; otherwise one of each.")
    if not isinstance(prompt, list):
        return [image], [prompt], False
    if not prompt or len(prompt) != len(image):
        raise S2VError(f"A batch needs as many subjects as prompts, at least one: got {len(image)} and {len(prompt)}.")
    return image, prompt, True
