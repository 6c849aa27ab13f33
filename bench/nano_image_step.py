"""What a nano base's image step costs against its video step: whether equal steps are equal minutes.

The base grid compares candidates at equal steps (the same minutes of one core). A candidate with
`tasks.image_share` trains some steps on `image_batch_size` images (one latent frame each) instead of
`video_batch_size` clips (five latent frames each). This times both training steps of the nano
transformer (4x VAE grid, random weights: the cost does not depend on them), forward, v-loss,
backward, clipping and AdamW, interleaved over rounds in alternating order, and prints the medians and
their ratio. Encoding is not timed: the grid trains from a prepared cache.

    python bench/nano_image_step.py                       # 4 clips vs 16 images
    python bench/nano_image_step.py --clips 4 --images 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import CogVideoXTransformer3DModel

from s2v.model import predict
from s2v_nano.base import TEXT_LENGTH, TRANSFORMER_CONFIG

LATENT_FRAMES = 5
"""A 9-frame clip through the nano VAE."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="clips in a video step (default 4)")
    parser.add_argument("--images", type=int, default=16, help="images in an image step (default 16)")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds of 5 steps each (default 10)")
    args = parser.parse_args()
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel(**TRANSFORMER_CONFIG).train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=1e-5)
    cases = {
        f"video ({args.clips} clips)": _batch(args.clips, LATENT_FRAMES),
        f"image ({args.images})": _batch(args.images, 1),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for round_ in range(args.rounds + 1):
        order = list(cases) if round_ % 2 else list(reversed(cases))
        for name in order:
            started = time.perf_counter()
            for _ in range(5):
                _step(transformer, optimizer, *cases[name])
            if round_:  # the first round warms up
                times[name].append((time.perf_counter() - started) / 5)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name}: median {medians[name]:.4f} s/step (min {min(values):.4f}, max {max(values):.4f})")
    video, image = medians.values()
    print(f"image step / video step: {image / video:.2f}x ({args.rounds} rounds x 5 steps)")
    return 0


def _batch(size: int, frames: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    side = TRANSFORMER_CONFIG["sample_height"]
    latents = torch.randn(size, frames, TRANSFORMER_CONFIG["in_channels"], side, side)
    return (
        latents,
        torch.randn(size, TEXT_LENGTH, TRANSFORMER_CONFIG["text_embed_dim"]),
        torch.randint(0, 1000, (size,)),
    )


def _step(transformer, optimizer, latents, embeds, timesteps) -> None:
    prediction = predict(transformer, latents, timesteps, embeds, None, frame_offset=0, config=transformer.config)
    prediction.float().pow(2).mean().backward()
    torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad()


if __name__ == "__main__":
    raise SystemExit(main())
