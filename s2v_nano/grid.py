"""`s2v-nano grid`: which lever lets the base draw the world, found by measurement.

Told a held-out subject's name, the first nano base drew the right colour but shapes at chance:
a subject is 17-22 px across and a token covered 8x8 px. Each candidate changes one thing (tokens
per subject through the VAE or the patch, width, learning rate, batch size, loss weighting, EMA),
trains its base text-to-video for the same minutes of one core, and is scored on the named-subject condition
over the 192 held-out items. The minutes become a step count from a timed probe, recorded in the
candidate's folder, so a resumed or repeated grid trains the same steps. Every stage writes once
and training resumes its checkpoints, so an interrupted grid continues where it stopped.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from diffusers import AutoencoderKLCogVideoX

from s2v.errors import S2VError
from s2v.video import atomic_folder

from .base import untrained_base, write_untrained_base
from .build import (
    BASE_CONFIG,
    BuildPlan,
    _assemble_base,
    _base_overrides,
    _evaluate,
    _train,
    vae_ceiling,
    write_captions,
)
from .vae import train_vae
from .world import NAMED_SHARE, base_captions_named, world_paths, write_world


@dataclass(frozen=True)
class Candidate:
    """One base recipe: the reference base with one lever moved."""

    name: str
    vae: int = 4
    """The VAE's spatial compression: 4 (12x12 latents) or 2 (24x24)."""
    transformer: dict = field(default_factory=dict)
    """Overrides of s2v_nano.base.TRANSFORMER_CONFIG."""
    train: tuple[str, ...] = ()
    """Overrides of s2v_train/configs/nano_base.yaml."""
    named_share: float | None = None
    """Share of base captions that name their subject; None keeps the world's (`NAMED_SHARE`)."""
    partial_share: float = 0.0
    """Share of the naming captions that name only some attributes (`base_captions_named`)."""

    @property
    def lever(self) -> str:
        """What the candidate changes, as the grid's table shows it."""
        named = [] if self.named_share is None else [f"named share {self.named_share:g}"]
        partial = [f"partial share {self.partial_share:g}"] if self.partial_share else []
        levers = [*(f"{k}={v}" for k, v in self.transformer.items()), *self.train, *named, *partial]
        return ", ".join([f"VAE {self.vae}x", *levers])

    @property
    def captions(self) -> str | None:
        """The name of the candidate's own base captions (and cache), or None for the world's."""
        if self.named_share is None and not self.partial_share:
            return None
        return f"named-{self._naming:g}" + (f"-partial-{self.partial_share:g}" if self.partial_share else "")

    def caption_lines(self, world: Path) -> list[dict]:
        """The base clips' caption lines as this candidate names their subjects."""
        return base_captions_named(world, self._naming, self.partial_share)

    @property
    def _naming(self) -> float:
        return NAMED_SHARE if self.named_share is None else self.named_share


CANDIDATES = {
    candidate.name: candidate
    for candidate in (
        Candidate("reference"),
        Candidate("vae-2x", vae=2),
        Candidate("patch-1", transformer={"patch_size": 1}),
        Candidate("wider", transformer={"num_attention_heads": 8}),
        Candidate("lr-2e-3", train=("optim.learning_rate=2e-3",)),
        Candidate("batch-4", train=("tasks.video_batch_size=4",)),
        Candidate("min-snr", train=("optim.snr_gamma=5",)),
        Candidate("ema", train=("optim.ema_decay=0.999",)),
        Candidate("vae-2x-batch-4", vae=2, train=("tasks.video_batch_size=4",)),
        Candidate("named-0.9-batch-4", named_share=0.9, train=("tasks.video_batch_size=4",)),
        Candidate("noisier-batch-4", train=("tasks.video_batch_size=4", "optim.timestep_logit_mean=0.5")),
        Candidate(
            "images-named-0.9-batch-4",
            named_share=0.9,
            train=("tasks.video_batch_size=4", "tasks.image_share=0.5", "tasks.image_batch_size=16"),
        ),
        Candidate(
            "ema-named-0.9-batch-4", named_share=0.9, train=("tasks.video_batch_size=4", "optim.ema_decay=0.9999")
        ),
        Candidate("partial-named-0.9-batch-4", named_share=0.9, partial_share=0.5, train=("tasks.video_batch_size=4",)),
    )
}
GRID_REFERENCE = ("tasks.video_batch_size=16", "tasks.image_share=0.0", "tasks.image_batch_size=8")
"""The first nano base's recipe, which each candidate moves one lever from (`nano_base.yaml` now holds the
grid's winner), so the grid's rows stay comparable with the numbers measured on it."""
FROZEN_PARTS = ("vae", "text_encoder", "tokenizer")
"""What every candidate on one VAE shares, linked from one folder, so they share one prepared cache too."""
PROBE_STEPS = (3, 13)
"""Two short runs whose time difference gives the seconds a step costs, setup excluded."""


def grid(folder: str | Path, names: list[str], minutes: float, plan: BuildPlan | None = None) -> dict[str, dict]:
    """Train and score each named candidate not yet done; returns every finished candidate's scores."""
    unknown = set(names) - set(CANDIDATES)
    if unknown:
        raise S2VError(f"Unknown candidate(s) {sorted(unknown)}; choose from {', '.join(CANDIDATES)}.")
    plan, root = plan or BuildPlan.full(), Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    world = _once(root / "world", lambda: write_world(root / "world", seed=plan.seed, **plan.world))
    for name in names:
        candidate = CANDIDATES[name]
        vae = root / f"vae-{candidate.vae}x"
        _once(vae, lambda c=candidate, v=vae: train_vae(world, v, replace(plan.vae, spatial_compression=c.vae)))
        ceiling = root / "results" / f"vae-{candidate.vae}x-ceiling.json"
        _once(ceiling, lambda v=vae, out=ceiling: vae_ceiling(v, plan, out))
        frozen = root / f"frozen-vae-{candidate.vae}x"
        _once(frozen, lambda v=vae, f=frozen: write_untrained_base(v, f, plan.seed))
        run_candidate(root / "candidates" / name, candidate, world, frozen, minutes, plan)
    scores = {
        name: json.loads(path.read_text())
        for name in CANDIDATES
        if (path := root / "candidates" / name / "results" / "named.json").exists()
    }
    (root / "grid.md").write_text(ceiling_table(root) + "\n" + grid_table(scores, root))
    return scores


def ceiling_table(root: Path) -> str:
    """Markdown: each VAE's ceiling as k/n held-out clips (identity: all four attributes)."""
    lines = ["| VAE | shape | colour | pattern | identity | PSNR |", "|---|---|---|---|---|---|"]
    for path in sorted((root / "results").glob("vae-*-ceiling.json")):
        result = json.loads(path.read_text())
        n, accuracy = result["clips"], result["accuracy"]
        cells = [f"{round(accuracy[k] * n / 100)}/{n} ({accuracy[k]:.1f})" for k in ("shape", "colour", "pattern")]
        cells.append(f"{round(accuracy['identity'] * n / 100)}/{n} ({accuracy['identity']:.1f})")
        lines.append(f"| {path.name.split('-ceiling')[0]} | {' | '.join(cells)} | {result['psnr']:.2f} |")
    return "\n".join(lines) + "\n"


def run_candidate(folder: Path, candidate: Candidate, world: Path, frozen: Path, minutes: float, plan: BuildPlan):
    """The candidate's base in a build-shaped folder (its `world` and frozen parts links to the grid's), then its
    scores. Candidates on one VAE read one cache, prepared by the first of them."""
    scores = folder / "results" / "named.json"
    if (folder / "results" / "captions.json").exists():
        budget_steps(folder, [], minutes)  # refuses a finished candidate asked for other minutes
        return
    folder.mkdir(parents=True, exist_ok=True)
    _link(folder / "world", world)
    untrained = folder / "base-untrained"
    _once(untrained, lambda: _untrained_linked(untrained, frozen, candidate, plan))
    cache = frozen.parent / f"cache-{frozen.name.removeprefix('frozen-')}"
    captions = world_paths(world).base_captions
    if candidate.captions is not None:
        shared, captions = frozen.parent / "captions" / f"{candidate.captions}.jsonl", folder / "captions.jsonl"
        _once(shared, lambda: write_captions(shared, candidate.caption_lines(world)))
        _link(captions, shared)  # candidates with the same captions resolve to one file, so they share a cache
        cache = cache.with_name(f"{cache.name}-{candidate.captions}")
    paths = [*GRID_REFERENCE, *_base_overrides(folder, plan, captions), *candidate.train, f"data.cache={cache}"]
    _once(cache / "index.json", lambda: _train(BASE_CONFIG, paths, prepare=True))
    steps = budget_steps(folder, paths, minutes)
    trained = [*paths, f"optim.max_steps={steps}", "run.checkpoint_every=100"]
    _once(folder / "base-train" / "task_log.json", lambda: _train(BASE_CONFIG, trained))
    _once(folder / "base", lambda: _assemble_base(folder))
    _once(scores, lambda: _evaluate(folder, None, plan, ("named",), scores))
    _once(folder / "results" / "captions.json", lambda: _caption_scores(folder, plan))


def _caption_scores(folder: Path, plan: BuildPlan) -> None:
    """The candidate's diffusion-classifier reading of real held-out clips (`s2v_nano.captions`)."""
    from s2v.loading import LoadSettings, load_pipeline

    from .captions import caption_accuracy

    pipe = load_pipeline(LoadSettings(preset="nano", model=str(folder / "base")))
    result = caption_accuracy(pipe, plan.seed, plan.eval.per_subject, plan.eval.limit)
    (folder / "results" / "captions.json").write_text(json.dumps(result, indent=1))


def _untrained_linked(untrained: Path, frozen: Path, candidate: Candidate, plan: BuildPlan) -> None:
    """The candidate's untrained base: its own transformer, the grid's frozen VAE, T5 and tokenizer."""
    vae = AutoencoderKLCogVideoX.from_pretrained(frozen / "vae")
    with atomic_folder(untrained) as staging:
        untrained_base(vae, plan.seed, candidate.transformer).save_pretrained(staging)
        for part in FROZEN_PARTS:
            shutil.rmtree(staging / part)
            _link(staging / part, frozen / part)


def _link(link: Path, target: Path) -> None:
    """A relative link (so the grid folder can move) to `target`, renewed when it dangles."""
    if link.is_symlink() and not link.exists():
        link.unlink()
    if not link.is_symlink():
        link.symlink_to(Path(os.path.relpath(target, link.parent)), target_is_directory=True)


def budget_steps(folder: Path, paths: list[str], minutes: float) -> int:
    """Steps that fill `minutes` at this candidate's measured speed; measured once, then read back."""
    record = folder / "budget.json"
    if record.exists():
        budget = json.loads(record.read_text())
        if budget["minutes"] != minutes:
            raise S2VError(f"{folder} was budgeted {budget['minutes']} minutes, not {minutes}; grid into a new folder.")
        return budget["steps"]
    seconds = {}
    for steps in PROBE_STEPS:
        probe = folder / f"probe-{steps}"
        shutil.rmtree(probe, ignore_errors=True)  # a probe interrupted after its checkpoint would resume, untimed
        try:
            started = time.perf_counter()
            _train(BASE_CONFIG, [*paths, f"run.output_dir={probe}", f"optim.max_steps={steps}"])
            seconds[steps] = time.perf_counter() - started
        finally:
            shutil.rmtree(probe, ignore_errors=True)
    per_step = (seconds[PROBE_STEPS[1]] - seconds[PROBE_STEPS[0]]) / (PROBE_STEPS[1] - PROBE_STEPS[0])
    steps = max(1, int(minutes * 60 / max(per_step, 1e-3)))
    record.write_text(json.dumps({"minutes": minutes, "seconds_per_step": round(per_step, 3), "steps": steps}))
    return steps


def grid_table(scores: dict[str, dict], root: Path) -> str:
    """Markdown: each candidate's lever and budget, its named-subject scores as k/n videos, then what its
    diffusion classifier reads from real clips (`s2v_nano.captions`), k/n items."""
    header = (
        "| candidate | lever | minutes: steps (s/step) | shape | colour | pattern | identity | motion | strict motion "
        "| present | text → shape | text → colour | text → pattern | text → motion |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name, report in scores.items():
        candidate, s = CANDIDATES[name], report["scores"]["named"]
        folder = root / "candidates" / name
        budget = json.loads((folder / "budget.json").read_text())
        lever = candidate.lever
        n, a = s["videos"], s["attributes"]
        cells = [a["shape"], a["colour"], a["pattern"], s["identity"], s["motion"], s["motion_strict"], s["present"]]
        counts = [_count(value, n) for value in cells]
        captions = folder / "results" / "captions.json"
        if captions.exists():
            read = json.loads(captions.read_text())
            counts += [_count(read["accuracy"][k], read["items"]) for k in ("shape", "colour", "pattern", "motion")]
        else:
            counts += [""] * 4
        budget_cell = f"{budget['minutes']:g}: {budget['steps']} ({budget['seconds_per_step']})"
        rows.append(f"| {name} | {lever} | {budget_cell} | {' | '.join(counts)} |")
    return header + "\n".join(rows) + "\n"


def _count(percent: float, n: int) -> str:
    return f"{round(percent * n / 100)}/{n}"


def _once(done: Path, work) -> Path:
    """Run `work` unless `done` (what it writes last, or atomically) exists."""
    if not done.exists():
        print(f"== {done}", flush=True)
        work()
    return done
