"""`s2v-nano build`: the whole nano chain from nothing, with fixed seeds.

The shipping chain: world -> VAE -> untrained base folder -> base text-to-video (`s2v_train/` as a
library) -> the shipped nano S2V run, scored by `s2v-nano eval`'s evaluator -> the shipped files. With
`ablations`, then METHOD §5's ablations, second seeds and the shipped recipe at other ranks (the same
trainer, a few overrides each, the shipped run's budget), each scored as soon as it is trained: the chain
fits one working day on 2 cores, the comparisons come after it. Every stage writes its output once and is
skipped when that output exists, and training stages resume their last checkpoint, so an interrupted
build continues where it stopped. Stage times go to build_log.json.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from s2v.errors import S2VError
from s2v.presets import NANO_FOLDER
from s2v.video import atomic_file, atomic_folder
from s2v_train.config import CONFIGS

from .base import write_untrained_base
from .evaluate import CONDITIONS, EvalSettings, evaluate
from .vae import VAETrainConfig, reconstruction_ceiling, train_vae
from .world import base_captions_named, split_identities, world_paths, write_world

BASE_CONFIG = CONFIGS / "nano_base.yaml"
S2V_CONFIG = CONFIGS / "nano_s2v.yaml"
SHIPPED = NANO_FOLDER

FULL_LEARNING_RATE = 2e-4
"""Full fine-tuning's learning rate: the LoRA's 1e-3 would move every weight of the trained base as far."""

ABLATIONS = {
    "switched": [],
    "image-only": ["tasks.mode=image-only"],
    "two-stage": ["tasks.mode=two-stage"],
    "switched-p0.4": ["tasks.motion_probability=0.4"],
    "no-dropout": ["tasks.drop_probability=0.0"],
    "first-frame": ["tasks.reference_frame=first"],
    "random-frame": ["tasks.motion_probability=0.4", "tasks.reference_frame=random"],
}
"""METHOD §5's ablations, each `nano_s2v.yaml` plus these overrides; "switched" (p = 0.2) is the paper's default.
"random-frame" is the shipped recipe with the paper's motion reference (a random frame of the clip) instead of
nano's (the clip's subject on white)."""


@dataclass
class BuildPlan:
    """How big each stage is; `full()` is the shipped model's plan, `smoke()` runs every code path in seconds."""

    seed: int = 0
    world: dict = field(default_factory=dict)
    vae: VAETrainConfig = field(default_factory=VAETrainConfig)
    base_named_share: float = 0.9
    """Share of the base's captions that name their subject (`base_captions_named`); the world's own share
    (0.5) is for the method's data. Told held-out names, a base trained at 0.5 drew shapes 46/192, at 0.9
    98/192 (`s2v-nano grid`, README)."""
    base_steps: int = 53_052
    """The batch-4 grid runs' 120-minute budget, at which named-0.9 and the images lever were measured."""
    s2v_steps: int = 3000
    """The shipped recipe on the build's base, 1,500 -> 3,000 steps (held-out items, of 192): strict motion
    102 -> 124, present in every frame 135 -> 161; shape 38 -> 40 (chance 38). About 28 minutes on 2 cores."""
    batch_overrides: list[str] = field(default_factory=list)
    ablations: tuple[str, ...] = tuple(ABLATIONS)
    shipped: str = "switched-p0.4"
    """The run scored under every condition and shipped: the better of the two switched runs measured here."""
    second_seeds: tuple[str, ...] = ("switched-p0.4", "switched")
    """Runs trained again with the next seed, so their gap can be told from run-to-run noise."""
    ranks: tuple[int, ...] = (8, 128, 0)
    """LoRA ranks trained at the shipped run's recipe and budget beside its own, to choose the rank by
    measurement; 0 fine-tunes the whole transformer instead (at `FULL_LEARNING_RATE`)."""
    eval: EvalSettings = field(default_factory=EvalSettings)
    ceiling_clips: int = 8
    """Clips per held-out subject for the VAE's ceiling: 192 in all."""

    @classmethod
    def full(cls) -> BuildPlan:
        return cls()

    @classmethod
    def smoke(cls) -> BuildPlan:
        return cls(
            world=dict(base_clips=12, pairs=8, motion_clips=8, eval_per_subject=1),
            vae=VAETrainConfig(steps=2, clip_batch=2, image_batch=2, warmup_steps=1, log_every=1),
            base_steps=2,
            s2v_steps=2,
            batch_overrides=["tasks.video_batch_size=2", "tasks.image_batch_size=2"],
            ablations=("switched", "image-only"),
            shipped="switched",
            second_seeds=("switched",),
            ranks=(4, 0),
            eval=EvalSettings(limit=2, steps=2, batch_size=2),
            ceiling_clips=1,
        )


def build(folder: str | Path, plan: BuildPlan, ship: bool = False, ablations: bool = False) -> dict:
    """Run every stage not yet done into `folder` (the ablations too with `ablations`); returns the scores."""
    unknown = {plan.shipped, *plan.second_seeds} - set(plan.ablations)
    if unknown:
        raise S2VError(
            f"{', '.join(map(repr, sorted(unknown)))} is not one of the plan's runs: {', '.join(plan.ablations)}."
        )
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / "build_log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"plan": _plan_json(plan), "stages": {}}
    if _chain(log["plan"]) != _chain(_plan_json(plan)):
        raise S2VError(f"{root} was built with another plan; build into a new folder (or delete {root}).")
    log["plan"] = _plan_json(plan)

    def stage(name: str, done: Path, work: Callable[[], object]) -> None:
        """Run `work` unless `done` (a file or folder it writes last, or atomically) exists."""
        if done.exists():
            return
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        work()
        log["stages"][name] = round(time.perf_counter() - started, 1)
        log_path.write_text(json.dumps(log, indent=1))

    _base_stages(root, plan, stage)
    others = [name for name in plan_runs(plan) if name != plan.shipped]
    runs = [plan.shipped, *(others if ablations else [])]
    for name in runs:
        _s2v_stages(root, plan, stage, name)
        scores = _write_table(root, plan, log["stages"])
    if ablations:
        minutes = sum(log["stages"].get(f"{kind} {name}", 0) for name in runs[1:] for kind in ("s2v", "eval")) / 60
        print(f"ablations, second seeds and ranks: {minutes:.0f} minutes of training and scoring", flush=True)
    if ship:
        ship_model(root, plan.shipped)
    return scores


def _write_table(root: Path, plan: BuildPlan, stages: dict[str, float]) -> dict[str, dict]:
    """results/table.md from every run scored so far, rewritten after each, so a stopped build's table is
    current; returns their scores."""
    results = root / "results"
    names = ("base", *plan_runs(plan))
    scores = {name: json.loads(path.read_text()) for name in names if (path := results / f"{name}.json").exists()}
    ceiling = json.loads((results / "vae_ceiling.json").read_text())
    (results / "table.md").write_text(ablation_table(scores, stages, ceiling))
    return scores


def _base_stages(root: Path, plan: BuildPlan, stage) -> None:
    """World, VAE and its ceiling, the base trained and scored, the S2V cache: everything every run shares."""
    world = root / "world"
    stage("world", world, lambda: write_world(world, seed=plan.seed, **plan.world))
    stage("vae", root / "vae", lambda: train_vae(world, root / "vae", plan.vae))
    ceiling = root / "results" / "vae_ceiling.json"
    stage("vae ceiling", ceiling, lambda: vae_ceiling(root / "vae", plan, ceiling))
    untrained = root / "base-untrained"
    stage("base-untrained", untrained, lambda: write_untrained_base(root / "vae", untrained, plan.seed))
    captions = root / "base-captions.jsonl"
    stage(
        "base captions", captions, lambda: write_captions(captions, base_captions_named(world, plan.base_named_share))
    )
    base_paths = _base_overrides(root, plan, captions)
    stage("base-cache", root / "cache" / "base" / "index.json", lambda: _train(BASE_CONFIG, base_paths, prepare=True))
    stage("base-train", root / "base-train" / "task_log.json", lambda: _train(BASE_CONFIG, base_paths))
    stage("base", root / "base", lambda: _assemble_base(root))
    base_scores = root / "results" / "base.json"
    stage("eval base", base_scores, lambda: _evaluate(root, None, plan, ("none", "named"), base_scores))
    s2v_cache = root / "cache" / "s2v" / "index.json"
    stage("s2v-cache", s2v_cache, lambda: _train(S2V_CONFIG, _s2v_overrides(root, plan), prepare=True))


def _s2v_stages(root: Path, plan: BuildPlan, stage, name: str) -> None:
    """One S2V run trained and scored: the shipped one under every condition, the others with the reference."""
    run, out = root / "runs" / name, root / "results" / f"{name}.json"
    own = plan_runs(plan)[name]
    overrides = [*_s2v_overrides(root, plan), f"run.output_dir={run}", *own]
    conditions = CONDITIONS if name == plan.shipped else ("reference",)
    stage(f"s2v {name}", run / "task_log.json", lambda: _train(S2V_CONFIG, overrides))
    if "model.lora_rank=0" not in own:
        stage(f"eval {name}", out, lambda: _evaluate(root, run / "lora", plan, conditions, out))
    else:  # full fine-tuning: the base with its own transformer
        model = run / "model"
        stage(
            f"eval {name}",
            out,
            lambda: _evaluate(root, None, plan, conditions, out, _assemble(root / "base", run, model)),
        )


def plan_runs(plan: BuildPlan) -> dict[str, list[str]]:
    """Every S2V run of the plan, each as its overrides of `nano_s2v.yaml`: the ablations, the second seeds
    ("switched-seed1") and the shipped recipe at other ranks ("switched-p0.4-rank8", "switched-p0.4-full")."""
    runs = {name: ABLATIONS[name] for name in plan.ablations}
    seed = plan.seed + 1
    runs |= {f"{name}-seed{seed}": [*ABLATIONS[name], f"run.seed={seed}"] for name in plan.second_seeds}
    for rank in plan.ranks:
        ranked = [f"model.lora_rank={rank}", f"model.lora_alpha={rank}"]
        full = ["model.lora_rank=0", f"optim.learning_rate={FULL_LEARNING_RATE}"]
        runs[f"{plan.shipped}-{f'rank{rank}' if rank else 'full'}"] = [
            *ABLATIONS[plan.shipped],
            *(ranked if rank else full),
        ]
    return runs


def _base_overrides(root: Path, plan: BuildPlan, captions: Path) -> list[str]:
    return [
        f"model.model={root / 'base-untrained'}",
        f"data.videos={world_paths(root / 'world').base}",
        f"data.video_captions={captions}",
        f"data.cache={root / 'cache' / 'base'}",
        f"run.output_dir={root / 'base-train'}",
        f"run.seed={plan.seed}",
        f"optim.max_steps={plan.base_steps}",
        *[o for o in plan.batch_overrides if o.startswith(("tasks.video", "tasks.image"))],
    ]


def write_captions(path: Path, lines: list[dict]) -> None:
    """Written whole, then renamed: a half-written file would otherwise pass for done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as staging:
        staging.write_text("".join(json.dumps(line) + "\n" for line in lines))


def _s2v_overrides(root: Path, plan: BuildPlan) -> list[str]:
    world = world_paths(root / "world")
    return [
        f"model.model={root / 'base'}",
        f"data.pairs={world.pairs}",
        f"data.videos={world.motion}",
        f"data.video_captions={world.motion_captions}",
        f"data.cache={root / 'cache' / 's2v'}",
        f"run.seed={plan.seed}",
        f"optim.max_steps={plan.s2v_steps}",
        *plan.batch_overrides,
    ]


def _train(config: Path, overrides: list[str], prepare: bool = False) -> None:
    """The trainer as `s2v-train [prepare]` would run it (config plus overrides); training resumes its
    last checkpoint, so a stopped build continues the run."""
    from s2v_train.cache import prepare as prepare_cache
    from s2v_train.config import load_config
    from s2v_train.loop import train

    print(f"$ s2v-train {'prepare ' if prepare else ''}--config {config} {' '.join(overrides)}", flush=True)
    settings = load_config(config, overrides)
    if prepare:
        prepare_cache(settings)
    else:
        train(settings, resume="latest")


def _assemble_base(root: Path) -> None:
    """The untrained folder with the trained transformer: the nano stand-in for THUDM/CogVideoX-5b."""
    _assemble(root / "base-untrained", root / "base-train", root / "base")


def _assemble(model: Path, run: Path, destination: Path) -> Path:
    """`model`'s folder with the transformer `run` trained, written once to `destination`: a fully
    fine-tuned transformer loads as a model of its own, as the base does."""
    if not destination.exists():
        with atomic_folder(destination) as staging:
            shutil.copytree(model, staging, dirs_exist_ok=True)
            shutil.rmtree(staging / "transformer")
            shutil.copytree(run / "transformer", staging / "transformer")
    return destination


def vae_ceiling(vae: Path, plan: BuildPlan, out: Path) -> None:
    """What the analyzer still reads on real held-out clips after a VAE round trip: the bound on every score."""
    from diffusers import AutoencoderKLCogVideoX

    model = AutoencoderKLCogVideoX.from_pretrained(vae).float().eval()  # a shipped VAE is stored in fp16
    held = split_identities(plan.seed)[1]
    result = reconstruction_ceiling(model, held, plan.ceiling_clips, seed=plan.seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"clips": plan.ceiling_clips * len(held), **asdict(result)}, indent=1))
    print(result, flush=True)


def _evaluate(
    root: Path, lora: Path | None, plan: BuildPlan, conditions: tuple[str, ...], out: Path, model: Path | None = None
) -> None:
    """Scores of the base (or `model`) with `lora` (None: the model alone) under `conditions`."""
    from s2v.loading import LoadSettings, load_pipeline

    torch.manual_seed(plan.seed)
    pipe = load_pipeline(LoadSettings(preset="nano", model=str(model or root / "base"), lora=lora and str(lora)))
    pipe.set_progress_bar_config(disable=True)
    settings = EvalSettings(**{**asdict(plan.eval), "seed": plan.seed, "conditions": conditions})
    report = evaluate(pipe, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.to_json())
    print(report.table(), flush=True)


def ablation_table(scores: dict[str, dict], stages: dict[str, float], ceiling: dict) -> str:
    """Markdown: the VAE's ceiling, then each run with its reference, the method's with its two baselines."""
    header = (
        "| run | identity | shape | colour | pattern | motion | dynamic | scene | smooth | copy | train min |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    c = ceiling["accuracy"]
    rows = [
        f"| *ceiling: real clips through the VAE* | {c['identity']:.1f} | {c['shape']:.1f} | {c['colour']:.1f} | "
        f"{c['pattern']:.1f} | {c['motion']:.1f} | | {c['scene']:.1f} | | | |"
    ]
    for name, report in scores.items():
        for condition, s in report["scores"].items():
            label = {
                "reference": name,
                "shuffled": f"{name}, shuffled reference",
                "none": f"{name}, no reference",
                "named": f"{name}, no reference, prompt names the subject",
                "drawn": f"{name}, subjects drawn by another renderer",
            }[condition]
            first = "none" if name == "base" else "reference"
            minutes = stages.get("base-train" if name == "base" else f"s2v {name}")
            a = s["attributes"]
            rows.append(
                f"| {label} | {s['identity']:.1f} | {a['shape']:.1f} | {a['colour']:.1f} | {a['pattern']:.1f} | "
                f"{s['motion']:.1f} | {s['dynamic']:.1f} | {s['scene']:.1f} | {s['smoothness']:.3f} | "
                f"{s['copy']:.1f} | {'' if minutes is None or condition != first else f'{minutes / 60:.1f}'} |"
            )
    return header + "\n".join(rows) + "\n"


def ship_model(root: Path, run: str, destination: Path = SHIPPED) -> None:
    """The base folder (weights in fp16) and `run`'s LoRA into assets/nano, replacing what is there only once
    the new copy is complete, so a failed ship keeps the old model."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel

    if not (root / "runs" / run / "lora").is_dir():
        raise S2VError(f"{root / 'runs' / run} holds no trained LoRA to ship; build it first.")
    with atomic_folder(destination, replace=True) as staging:
        shutil.copytree(root / "base", staging / "base", ignore=shutil.ignore_patterns("train_log.json"))
        for kind, sub in ((CogVideoXTransformer3DModel, "transformer"), (AutoencoderKLCogVideoX, "vae")):
            shutil.rmtree(staging / "base" / sub)
            kind.from_pretrained(root / "base" / sub).to(torch.float16).save_pretrained(staging / "base" / sub)
        shutil.copytree(root / "runs" / run / "lora", staging / "lora")
        shutil.copy(root / "results" / "table.md", staging / "results.md")
        shutil.copy(root / "build_log.json", staging / "build_log.json")


def _plan_json(plan: BuildPlan) -> dict:
    return json.loads(json.dumps(asdict(plan)))


RUN_LISTS = ("ablations", "second_seeds", "ranks")
"""Plan fields that only add or drop comparison runs: a folder whose chain took hours keeps it when they change."""


def _chain(plan: dict) -> dict:
    return {key: value for key, value in plan.items() if key not in RUN_LISTS}
