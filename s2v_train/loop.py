"""The training loop: stochastically-switched fine-tuning on accelerate (METHOD §5).

One function, `train`, readable top to bottom: load the frozen base model, add the
LoRA, build the data, then each step pick a task, encode a micro-batch, take an
optimizer step, and now and then checkpoint and render validation videos.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel, cast_training_params
from peft import LoraConfig, set_peft_model_state_dict
from safetensors.torch import load_file
from tqdm.auto import tqdm

from s2v.errors import S2VError
from s2v.loading import ADAPTER_NAME, LORA_TARGET_MODULES, OUR_LORA_FILE, load_base_pipeline, save_lora
from s2v.video import save_video

from .cache import open_cache
from .checkpoint import TrainingState, load_checkpoint, resolve_resume, save_checkpoint
from .config import TEXT_TO_VIDEO, TrainConfig, to_dict
from .data import SkipCounter, draw
from .tasks import (
    IDENTITY,
    IMAGE,
    MOTION,
    TaskSchedule,
    batch_loss,
    drop_captions,
    encode_text,
    encoding_sources,
    identity_batch,
    image_batch,
    motion_batch,
    unreferenced_frame_offset,
)

log = logging.getLogger("train")
TRAIN_LOG = "train_log.jsonl"
"""One line per optimizer step: step, task, loss, learning rate, skipped samples."""


def train(config: TrainConfig, resume: str | None = None) -> Path:
    """Train and return the folder of the final LoRA (or transformer, for full fine-tuning)."""
    output_dir = Path(config.run.output_dir)
    accelerator = Accelerator(
        mixed_precision=config.optim.mixed_precision if torch.cuda.is_available() else "no",
        gradient_accumulation_steps=config.optim.gradient_accumulation_steps,
        log_with=_trackers(config.run.log_with),
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
    )
    weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
    output_dir.mkdir(parents=True, exist_ok=True)

    # 1. Frozen base model (T5 with <cls>, VAE, transformer) and the trainable LoRA
    pipe = load_base_pipeline(config.model.preset, config.model.model, weight_dtype)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.text_encoder, pipe.vae, pipe.transformer):
        module.requires_grad_(False)
    pipe.to(accelerator.device)
    transformer = pipe.transformer
    trainable = make_trainable(transformer, config)
    if config.model.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    transformer.train()

    # 2. Data: identity pairs and unpaired clips, drawn at random from the full sets
    with accelerator.main_process_first():
        pairs, videos = open_cache(config) if config.data.cache else encoding_sources(pipe, config)
    skipped = SkipCounter()
    with torch.no_grad():
        empty_prompt = encode_text(pipe, [""])[0] if config.tasks.caption_dropout else None

    # 3. Optimizer, warm-up schedule, and accelerate's wrapping
    optimizer = make_optimizer(trainable, config)
    lr_scheduler = get_scheduler(
        config.optim.lr_schedule,
        optimizer,
        num_warmup_steps=config.optim.warmup_steps * accelerator.num_processes,
        num_training_steps=config.optim.max_steps * accelerator.num_processes,
    )
    model, optimizer, lr_scheduler = accelerator.prepare(transformer, optimizer, lr_scheduler)
    _register_weight_hooks(accelerator, transformer, config)
    ema = _moving_average(accelerator, trainable, config)

    # 4. Our randomness (task switch, data, drops, noise), per process, and resuming
    state = TrainingState(seed=config.run.seed + accelerator.process_index)
    checkpoint = resolve_resume(output_dir, resume)
    if checkpoint is not None:
        load_checkpoint(accelerator, checkpoint, state)
        log.info("resumed from %s at step %d", checkpoint, state.step)
        if ema is not None:
            ema.to(accelerator.device, dtype=torch.float32)  # accelerate reloads custom objects on the CPU
    if accelerator.is_main_process:
        _truncate_log(output_dir / TRAIN_LOG, state.step)
        accelerator.init_trackers("s2v", config=_flat(to_dict(config)))
    schedule = TaskSchedule(config.tasks, config.optim.max_steps)

    # 5. The loop: one task per micro-batch
    progress = tqdm(
        total=config.optim.max_steps, initial=state.step, disable=not accelerator.is_local_main_process, desc="train"
    )
    while state.step < config.optim.max_steps:
        task = schedule.task(state.step, state.rng)
        with accelerator.accumulate(model):
            batch = _batch(task, pipe, pairs, videos, config, state, skipped)
            if empty_prompt is not None:
                batch = drop_captions(batch, empty_prompt, config.tasks.caption_dropout, state.rng)
            loss = batch_loss(
                model,
                transformer.config,
                pipe.scheduler,
                batch,
                state.generator,
                config.optim.snr_gamma,
                unreferenced_frame_offset(config.tasks),
                config.optim.logit_normal,
            )
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
        if not accelerator.sync_gradients:
            continue
        if ema is not None:
            ema.step(trainable)
        state.step += 1
        state.tasks.append(task)
        metrics = {
            "loss": loss.detach().item(),
            "lr": lr_scheduler.get_last_lr()[0],
            "task_motion": float(task == MOTION),
            "reference_kept": batch.keep.float().mean().item(),
            "skipped_samples": skipped.skipped,
        }
        accelerator.log(metrics, step=state.step)
        if accelerator.is_main_process:
            with (output_dir / TRAIN_LOG).open("a") as handle:
                handle.write(json.dumps({"step": state.step, "task": task, **metrics}) + "\n")
        progress.update()
        progress.set_postfix(task=task, loss=f"{metrics['loss']:.4f}")
        if state.step % config.run.checkpoint_every == 0 or state.step == config.optim.max_steps:
            save_checkpoint(accelerator, output_dir, state, config.run.keep_checkpoints)
        if config.run.validation and state.step % config.run.validate_every == 0 and accelerator.is_main_process:
            _validate(accelerator, pipe, config, state.step, output_dir)
    progress.close()

    # 6. Export: the final weights in the format s2v loads as is, and the task log
    final = output_dir / ("lora" if config.model.lora_rank else "transformer")
    if ema is not None:
        ema.copy_to(trainable)
    if accelerator.is_main_process:
        _export(transformer, config, final)
        (output_dir / "task_log.json").write_text(json.dumps(state.tasks))
        if skipped.skipped:
            log.warning("skipped %d unreadable samples, e.g. %s", skipped.skipped, skipped.reasons[-1])
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return final


def _truncate_log(path: Path, step: int) -> None:
    """Forget log lines past the step we resume from (a killed run may have written more)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in lines))


def make_trainable(transformer, config: TrainConfig) -> list[torch.nn.Parameter]:
    """LoRA on METHOD §4's targets (fp32 by default), or the whole transformer."""
    if config.model.lora_rank == 0:
        transformer.requires_grad_(True)
        transformer.to(torch.float32)
        return list(transformer.parameters())
    lora = LoraConfig(
        r=config.model.lora_rank,
        lora_alpha=config.model.lora_alpha,
        target_modules=list(LORA_TARGET_MODULES),
        init_lora_weights=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.run.seed)  # the same initial A on every process and every rerun
        transformer.add_adapter(lora, adapter_name=ADAPTER_NAME)
    cast_training_params(transformer, dtype=torch.float32 if config.model.lora_dtype == "fp32" else torch.bfloat16)
    return [parameter for parameter in transformer.parameters() if parameter.requires_grad]


def _batch(task, pipe, pairs, videos, config: TrainConfig, state: TrainingState, skipped: SkipCounter):
    """Draw one micro-batch of the chosen task from its source; the frozen encoders need no gradients."""
    tasks, scaling, device = config.tasks, pipe.vae.config.scaling_factor, pipe._execution_device
    with torch.no_grad():
        if task == IDENTITY:
            items = [draw(pairs, state.rng, skipped) for _ in range(tasks.image_batch_size)]
            return identity_batch(items, state.generator, scaling, device)
        if task == IMAGE:
            items = [draw(videos, state.rng, skipped) for _ in range(tasks.image_batch_size)]
            return image_batch(items, state.generator, scaling, device)
        items = [draw(videos, state.rng, skipped) for _ in range(tasks.video_batch_size)]
        return motion_batch(items, tasks, state.rng, state.generator, scaling, device)


def make_optimizer(parameters: list[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    options = dict(lr=optim.learning_rate, betas=(optim.adam_beta1, optim.adam_beta2), weight_decay=optim.weight_decay)
    if optim.optimizer == "adamw8bit":
        if not torch.cuda.is_available():
            raise S2VError("optim.optimizer adamw8bit uses bitsandbytes, which needs a CUDA GPU; use adamw here.")
        import bitsandbytes

        return bitsandbytes.optim.AdamW8bit(parameters, **options)
    return torch.optim.AdamW(parameters, **options)


def _moving_average(accelerator: Accelerator, trainable: list[torch.nn.Parameter], config: TrainConfig):
    """The weights' moving average, saved and resumed with every checkpoint (None when the config has none).

    Kept in fp32 whatever the weights' dtype: a 0.001 step of an average is below bf16's resolution.
    """
    if config.optim.ema_decay is None:
        return None
    ema = EMAModel(trainable, decay=config.optim.ema_decay, use_ema_warmup=True)
    ema.to(accelerator.device, dtype=torch.float32)
    accelerator.register_for_checkpointing(ema)
    return ema


def _register_weight_hooks(accelerator: Accelerator, transformer, config: TrainConfig) -> None:
    """Checkpoints hold only the trainable weights, in s2v's own format, not 10 GB of frozen base."""

    def save(models, weights, folder):
        if accelerator.is_main_process:
            _export(transformer, config, Path(folder) / ("lora" if config.model.lora_rank else "transformer"))
        weights.clear()

    def load(models, folder):
        models.clear()
        if config.model.lora_rank:
            state = load_file(str(Path(folder) / "lora" / OUR_LORA_FILE))
            state = {key.removeprefix("transformer."): value for key, value in state.items()}
            set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER_NAME)
        else:
            loaded = type(transformer).from_pretrained(Path(folder) / "transformer")
            transformer.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def _export(transformer, config: TrainConfig, folder: Path) -> None:
    if config.model.lora_rank:
        save_lora(transformer, folder, ADAPTER_NAME)
    else:
        transformer.save_pretrained(folder)


def _validate(accelerator: Accelerator, pipe, config: TrainConfig, step: int, output_dir: Path) -> None:
    """Videos from fixed subjects, prompts and seeds, so runs and steps compare like for like.

    Each is written as an mp4 and logged to TensorBoard as a strip of its frames.
    """
    folder = output_dir / "validation" / f"step_{step:07d}"
    pipe.transformer.eval()
    strips = {}
    for index, sample in enumerate(config.run.validation):
        output = pipe(
            None if config.tasks.mode == TEXT_TO_VIDEO else sample.subject,
            sample.prompt,
            height=config.data.height,
            width=config.data.width,
            num_frames=config.data.num_frames,
            num_inference_steps=config.run.validation_steps,
            seed=sample.seed,
        )
        save_video(output.frames, folder / f"{index:02d}.mp4", fps=round(config.data.fps))
        strips[f"validation/{index:02d}"] = np.concatenate(list(output.frames), axis=1)
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images(strips, step=step, dataformats="HWC")
    pipe.transformer.train()


def _trackers(log_with: str | None) -> list[str] | None:
    """The requested trackers that are installed; training never fails for want of a logger."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    wanted = {"all": ["tensorboard", "wandb"], None: [], "none": []}.get(log_with, [log_with])
    available = {"tensorboard": is_tensorboard_available(), "wandb": is_wandb_available()}
    missing = [name for name in wanted if not available.get(name)]
    if missing:
        log.warning("not logging to %s: not installed", ", ".join(missing))
    return [name for name in wanted if available.get(name)] or None


def _flat(values: dict, prefix: str = "") -> dict:
    """Nested config -> flat scalars, as TensorBoard's hyperparameter view needs."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, (int, float, str, bool)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat
