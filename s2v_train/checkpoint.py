"""Checkpoints that resume exactly: written atomically, the last K kept.

A checkpoint is a folder `checkpoints/step_0000500/` holding accelerate's state
(optimizer, LR scheduler, library RNGs), the trainable weights (`lora/` in the same
format s2v loads, or `transformer/` for full fine-tuning) and `trainer_state_<rank>.json`
(step, task log and the training RNGs). It is written under a temporary name and renamed
when complete, so a run killed mid-write leaves only a temporary folder that resuming
ignores.
"""

from __future__ import annotations

import base64
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from s2v.errors import S2VError

PREFIX = "step_"
TEMPORARY = ".tmp-"


@dataclass
class TrainingState:
    """Everything random or counted in the loop that accelerate does not already save."""

    seed: int
    step: int = 0
    tasks: list[str] = field(default_factory=list)
    rng: np.random.Generator = None
    """Task switch, data draws, reference frames and drops."""
    generator: torch.Generator = None
    """Noise, timesteps and VAE latent samples."""

    def __post_init__(self):
        if self.rng is None:
            self.rng = np.random.default_rng(self.seed)
        if self.generator is None:
            self.generator = torch.Generator().manual_seed(self.seed)

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "step": self.step,
            "tasks": self.tasks,
            "rng": self.rng.bit_generator.state,
            "generator": base64.b64encode(self.generator.get_state().numpy().tobytes()).decode(),
        }

    def load_json(self, state: dict) -> None:
        self.seed, self.step, self.tasks = state["seed"], state["step"], list(state["tasks"])
        self.rng.bit_generator.state = state["rng"]
        raw = np.frombuffer(base64.b64decode(state["generator"]), dtype=np.uint8).copy()
        self.generator.set_state(torch.from_numpy(raw))


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"{PREFIX}{step:07d}"


def save_checkpoint(accelerator, output_dir: Path, state: TrainingState, keep: int) -> Path:
    """Write the full training state for `state.step`; every process takes part."""
    final = checkpoint_dir(output_dir, state.step)
    temporary = final.with_name(TEMPORARY + final.name)
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)  # left by a run killed while writing
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    (temporary / f"trainer_state_{accelerator.process_index}.json").write_text(json.dumps(state.to_json()))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        temporary.rename(final)
        for old in complete_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary folders of interrupted writes are not)."""
    folder = output_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(path for path in folder.iterdir() if path.is_dir() and path.name.startswith(PREFIX))


def resolve_resume(output_dir: Path, resume: str | None) -> Path | None:
    """`latest` -> the newest complete checkpoint (None when there is none yet), or a given folder."""
    if resume is None:
        return None
    if resume == "latest":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not path.is_dir():
        raise S2VError(f"No checkpoint at {path}; use --resume latest or a checkpoints/step_* folder.")
    return path


def load_checkpoint(accelerator, path: Path, state: TrainingState) -> None:
    accelerator.load_state(str(path))
    state_file = path / f"trainer_state_{accelerator.process_index}.json"
    if not state_file.is_file():
        raise S2VError(f"{path} has no {state_file.name}: it was written by a run with fewer processes.")
    state.load_json(json.loads(state_file.read_text()))
