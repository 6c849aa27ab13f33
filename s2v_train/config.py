"""Training configuration: plain dataclasses, read from YAML, with every default from METHOD §5."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from s2v.errors import S2VError

CONFIGS = Path(__file__).parent / "configs"
"""The shipped configs, addressable by name from any folder."""
TEXT_TO_VIDEO = "text-to-video"
MODES = ("switched", "image-only", "two-stage", "joint-t2v", TEXT_TO_VIDEO)
"""The method's switched training, its ablations (METHOD §5), and text-to-video: pretraining a base model
the way CogVideoX was, every step a video with no reference, the video at RoPE frames 0..T-1."""
SUBJECT_REFERENCE = "subject"
REFERENCE_FRAMES = ("random", "first", "grid", SUBJECT_REFERENCE)
LR_SCHEDULES = ("constant_with_warmup", "cosine")


@dataclass
class ModelConfig:
    preset: str = "cogvideox-5b"
    model: str | None = None
    """Hub id or folder of the base model; overrides the preset's."""
    lora_rank: int = 128
    """0 trains the whole transformer instead of a LoRA."""
    lora_alpha: float = 64
    lora_dtype: str = "fp32"
    """fp32 keeps small AdamW updates; bf16 replicates the release, whose updates often round away."""
    gradient_checkpointing: bool = True


@dataclass
class DataConfig:
    pairs: str | None = None
    """Identity pairs: Subjects200K (parquet file/folder or HF dataset id) or a .jsonl file."""
    videos: str | None = None
    """Folder of unpaired clips (mp4/webm/mov) for the motion task."""
    video_captions: str | None = None
    """Optional CSV or JSONL with `file` and `caption`."""
    synthetic: bool = False
    """Generate a small synthetic set under output_dir/data instead (the CPU smoke run)."""
    height: int = 480
    width: int = 720
    num_frames: int = 49
    fps: float = 8.0
    min_quality: int = 5
    pair_padding: int = 8
    cache: str | None = None
    """Folder of VAE latents and T5 embeddings written by `s2v-train prepare`; read instead of the data."""


@dataclass
class TaskConfig:
    mode: str = "switched"
    motion_probability: float = 0.2
    """p: the chance a micro-batch is a motion (video) batch."""
    drop_probability: float = 0.5
    """q: the chance a motion sample loses its whole reference stream."""
    reference_frame: str = "random"
    """random (uniform over the clip), first, or grid (the release's frames 0, 9, 18, ...): METHOD §5. Or
    subject: not a frame but the clip's subject as a user uploads it (on white, centred, at the preset's
    size; each clip's captions line names it as `reference`), a frame of which the video can never be a
    copy. A frame teaches the model that the reference reappears as is somewhere in the clip: on nano,
    where a user's reference is a subject on white, that copy showed as white patches in the last frames."""
    image_batch_size: int = 8
    video_batch_size: int = 1
    caption_dropout: float = 0.0
    """Chance a caption becomes the empty prompt. The method uses none; training a base model for CFG does."""
    image_share: float = 0.0
    """Text-to-video only: the chance a micro-batch is images, as CogVideoX was pretrained on images beside
    videos: `image_batch_size` clips' first latent frames, a fifth of a clip's tokens each."""

    @property
    def motion_share(self) -> float:
        """p as the mode applies it: 0 for image-only, 1 for a text-to-video base, else `motion_probability`."""
        return {"image-only": 0.0, TEXT_TO_VIDEO: 1.0}.get(self.mode, self.motion_probability)


def subject_references(config: TaskConfig) -> bool:
    """Whether the motion task's references are the clips' subject images rather than frames of them."""
    return config.reference_frame == SUBJECT_REFERENCE


@dataclass
class OptimConfig:
    learning_rate: float = 5e-5
    warmup_steps: int = 200
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    weight_decay: float = 1e-4
    max_grad_norm: float = 1.0
    optimizer: str = "adamw"
    """adamw, or adamw8bit (bitsandbytes, GPU only)."""
    max_steps: int = 4000
    lr_schedule: str = "constant_with_warmup"
    """constant_with_warmup (METHOD §5), or cosine (decays to 0 by max_steps: training from scratch)."""
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"
    """bf16 autocast over fp32 LoRA weights, or no."""
    snr_gamma: float | None = None
    """Min-SNR-gamma loss weighting (Hang et al. 2023; 5 is theirs), diffusers' v-prediction form
    min(SNR, gamma) / (SNR + 1): relative to plain v-MSE it halves the nearly clean steps and fades out the
    noisiest (0 at zero terminal SNR). The logged loss is the weighted one. None: plain v-prediction MSE."""
    timestep_logit_mean: float | None = None
    """Draw each step's noise level from a logit-normal (SD3's; diffusers' `compute_density_for_timestep_sampling`)
    centred here instead of uniformly over the scheduler's timesteps: above 0 trains more often at high noise,
    where layout and shape are decided. None: uniform, as CogVideoX trains."""
    timestep_logit_std: float = 1.0
    ema_decay: float | None = None
    """Export an exponential moving average of the trained weights (diffusers' EMAModel, whose warm-up ramps
    the decay up to this over ~30k steps at 0.999) instead of the last step's. Checkpoints and validation
    videos hold the live weights. None: no average."""

    @property
    def logit_normal(self) -> tuple[float, float] | None:
        """(mean, std) of the timestep draw, or None for uniform."""
        return None if self.timestep_logit_mean is None else (self.timestep_logit_mean, self.timestep_logit_std)


@dataclass
class ValidationSample:
    subject: str
    prompt: str
    seed: int = 42


@dataclass
class RunConfig:
    output_dir: str = "runs/s2v"
    seed: int = 42
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 500
    validation_steps: int = 50
    """Denoising steps for validation videos."""
    validation: list[ValidationSample] = field(default_factory=list)
    log_with: str | None = "tensorboard"
    """tensorboard, wandb, all, or none."""


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tasks: TaskConfig = field(default_factory=TaskConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def check(self) -> TrainConfig:
        """Refuse settings that cannot train, before any model is loaded."""
        tasks, data = self.tasks, self.data
        if tasks.mode not in MODES:
            raise S2VError(f"tasks.mode must be one of {', '.join(MODES)}, not {tasks.mode!r}.")
        if tasks.reference_frame not in REFERENCE_FRAMES:
            raise S2VError(f"tasks.reference_frame must be one of {', '.join(REFERENCE_FRAMES)}.")
        for name in ("motion_probability", "drop_probability", "caption_dropout"):
            if not 0.0 <= getattr(tasks, name) <= 1.0:
                raise S2VError(f"tasks.{name} must be between 0 and 1, not {getattr(tasks, name)}.")
        if not 0.0 <= tasks.image_share < 1.0:
            raise S2VError(f"tasks.image_share must be at least 0 and below 1, not {tasks.image_share}.")
        if tasks.image_share and tasks.mode != TEXT_TO_VIDEO:
            raise S2VError(
                f"tasks.image_share trains a {TEXT_TO_VIDEO} base on images; the method's image task is identity "
                "injection (tasks.motion_probability)."
            )
        if (data.num_frames - 1) % 8 or data.num_frames < 9:
            raise S2VError(f"data.num_frames must be 8k+1 (9, 17, ..., 49), not {data.num_frames}.")
        if data.height % 16 or data.width % 16:
            raise S2VError(f"data.height and data.width must be multiples of 16, not {data.height}x{data.width}.")
        if not data.synthetic and data.pairs is None and self.uses_pairs:
            raise S2VError("data.pairs is required: identity pairs (Subjects200K or a .jsonl file), or data.synthetic.")
        if not data.synthetic and data.videos is None and self.uses_videos:
            raise S2VError("data.videos is required for the motion task (or set tasks.mode: image-only).")
        if self.optim.lr_schedule not in LR_SCHEDULES:
            schedule = self.optim.lr_schedule
            raise S2VError(f"optim.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {schedule!r}.")
        if self.optim.optimizer not in ("adamw", "adamw8bit"):
            raise S2VError(f"optim.optimizer must be adamw or adamw8bit, not {self.optim.optimizer!r}.")
        if self.optim.snr_gamma is not None and not self.optim.snr_gamma > 0:
            raise S2VError(f"optim.snr_gamma must be above 0 (or null for no weighting), not {self.optim.snr_gamma}.")
        if not self.optim.timestep_logit_std > 0:
            raise S2VError(f"optim.timestep_logit_std must be above 0, not {self.optim.timestep_logit_std}.")
        if self.optim.ema_decay is not None and not 0 < self.optim.ema_decay < 1:
            raise S2VError(
                f"optim.ema_decay must be between 0 and 1 (or null for no average), not {self.optim.ema_decay}."
            )
        if self.model.lora_dtype not in ("fp32", "bf16"):
            raise S2VError(f"model.lora_dtype must be fp32 or bf16, not {self.model.lora_dtype!r}.")
        return self

    @property
    def uses_videos(self) -> bool:
        return self.tasks.motion_share > 0

    @property
    def uses_pairs(self) -> bool:
        """False only when every step is a video step: a text-to-video base, or p = 1."""
        return self.tasks.motion_share < 1


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """A config from YAML plus `section.key=value` overrides (values parsed as YAML)."""
    path = resolve_config(path)
    raw = yaml.safe_load(path.read_text()) or {}
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or "." not in key:
            raise S2VError(f"Overrides look like section.key=value, not {override!r}.")
        section, name = key.split(".", 1)
        raw.setdefault(section, {})[name] = yaml.safe_load(value)
    return _build(TrainConfig, raw, "config").check()


def resolve_config(path: str | Path) -> Path:
    """A YAML file, or the name of one shipped in `s2v_train/configs` (so `--config tiny` works from any folder)."""
    path = Path(path)
    if path.is_file():
        return path
    shipped = CONFIGS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent == Path(".") and shipped.is_file():
        return shipped
    names = ", ".join(sorted(c.stem for c in CONFIGS.glob("*.yaml") if not c.stem.startswith("accelerate")))
    raise S2VError(f"Config not found: {path}. Give a YAML file or a shipped config's name: {names}.")


def to_dict(config: TrainConfig) -> dict:
    return dataclasses.asdict(config)


def _build(kind, raw, where: str):
    """Dataclass `kind` from a dict, refusing keys it does not know (typos must not pass silently)."""
    if not isinstance(raw, dict):
        raise S2VError(f"{where} must be a mapping, not {raw!r}.")
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise S2VError(f"Unknown setting(s) in {where}: {', '.join(unknown)}. Known: {', '.join(fields)}.")
    values = {}
    for name, value in raw.items():
        nested = _nested_type(kind, name)
        if nested is ValidationSample:
            values[name] = [_build(ValidationSample, item, f"{where}.{name}") for item in value or []]
        elif nested is not None:
            values[name] = _build(nested, value, f"{where}.{name}")
        else:
            values[name] = _as_annotated(fields[name], value, f"{where}.{name}")
    return kind(**values)


def _as_annotated(field: dataclasses.Field, value, where: str):
    """A number where the setting is a number: YAML reads `2e-3` (no dot) as text, which would reach the
    optimizer as a string."""
    if field.type not in ("float", "float | None"):
        return value
    if value is None:
        if field.type == "float":
            raise S2VError(f"{where} must be a number, not null.")
        return value
    if isinstance(value, bool):
        raise S2VError(f"{where} must be a number, not {value!r}.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise S2VError(f"{where} must be a number, not {value!r}.") from None


def _nested_type(kind, name: str):
    sections = {"model": ModelConfig, "data": DataConfig, "tasks": TaskConfig, "optim": OptimConfig, "run": RunConfig}
    if kind is TrainConfig:
        return sections[name]
    if kind is RunConfig and name == "validation":
        return ValidationSample
    return None
