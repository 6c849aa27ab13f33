"""The paper's Table 1 metrics (METHOD §6), computed the paper's way.

- CLIP-T: `openai/clip-vit-base-patch32`; the prompt without `<cls>` against each of the 16 centre
  frames, cosine of the projected embeddings x 100, averaged over the frames.
- CLIP-I: the same CLIP; the reference image against those frames.
- DINO-I: DINO ViT-S/16 (`facebook/dino-vits16`), its CLS token; shorter side resized to 224
  (bicubic), 224 centre crop, ImageNet mean and std; reference against the same frames, x 100.
- Dynamic degree: VBench's. Frames sampled at about 8 fps, RAFT optical flow (torchvision's port
  of VBench's raft-things checkpoint, 20 updates) between consecutive samples; a pair's score is
  the mean of its top 5% flow magnitudes; a video is dynamic when at least round(4 n / 16) of its
  pairs (n samples) score above 6 x min(H, W) / 256. Reported as the share of dynamic videos.
- Motion smoothness: VBench's arithmetic. Each odd frame is predicted from its two neighbours and
  scored as (255 - mean absolute error) / 255 in uint8, averaged; x 100. VBench predicts with AMT-S,
  which no maintained package ships; we use RAFT flow with the linear flow approximation at t = 0.5
  and backward warping, so the number is **not comparable** to the paper's (the table says so).

The flow estimator and the interpolator are plain functions, so the arithmetic is testable without
their weights.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import S2VError, first_line, missing_model_message
from .text import strip_reference_token

CLIP_MODEL = "openai/clip-vit-base-patch32"
DINO_MODEL = "facebook/dino-vits16"
RAFT_CHECKPOINT = "torchvision raft_large C_T_V1"
RAFT_FILE = "raft_large_C_T_V1-22a6c225.pth"
"""torchvision's port of princeton-vl's raft-things.pth (FlyingChairs + FlyingThings), the checkpoint VBench loads."""
INTERPOLATOR = "RAFT flow midpoint (linear flow approximation, backward warp)"
PAPER_INTERPOLATOR = "AMT-S"

CENTRE_FRAMES = 16
FLOW_FPS = 8.0
RAFT_UPDATES = 20
TOP_SHARE = 0.05
RAFT_MULTIPLE = 8

FlowFunction = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""Two uint8 [H, W, 3] frames -> float [H', W', 2] flow (dx, dy) in pixels, `a[x] ~ b[x + flow(x)]`."""
Interpolator = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""The frames before and after -> the uint8 [H, W, 3] frame halfway between them."""


def centre_indices(num_frames: int, count: int = CENTRE_FRAMES) -> list[int]:
    """The `count` middle frames of a clip (all of them when it is shorter)."""
    if num_frames < 1:
        raise S2VError("a video with no frames cannot be scored.")
    start = max(0, (num_frames - count) // 2)
    return list(range(start, min(num_frames, start + count)))


def mean_cosine_100(anchor: torch.Tensor, features: torch.Tensor) -> float:
    """Cosine of `anchor` [D] with each row of `features` [N, D], x 100, averaged."""
    anchor = torch.nn.functional.normalize(anchor.float(), dim=-1)
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return float((features @ anchor).mean() * 100)


class ClipScorer:
    """CLIP-T and CLIP-I over a video's centre frames."""

    def __init__(self, model, tokenizer, image_processor, name: str = CLIP_MODEL):
        self.model, self.tokenizer, self.image_processor, self.name = model.eval(), tokenizer, image_processor, name

    @classmethod
    def load(cls, source: str = CLIP_MODEL, device: str = "cpu") -> ClipScorer:
        from transformers import AutoTokenizer, CLIPModel
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        def build():
            model = CLIPModel.from_pretrained(source).to(device)
            return cls(
                model, AutoTokenizer.from_pretrained(source), CLIPImageProcessorPil.from_pretrained(source), source
            )

        return _load(build, source, "--clip-model")

    @torch.no_grad()
    def scores(self, prompt: str, reference: Image.Image, frames: np.ndarray) -> tuple[float, float]:
        """(CLIP-T, CLIP-I), with the centre frames embedded once for both."""
        frame_features = self._image_features(_centre(frames))
        return (
            mean_cosine_100(self._text_features(prompt), frame_features),
            mean_cosine_100(self._image_features([reference])[0], frame_features),
        )

    def _text_features(self, prompt: str) -> torch.Tensor:
        text = self.tokenizer(
            [strip_reference_token(prompt)], padding=True, truncation=True, max_length=77, return_tensors="pt"
        ).to(self.model.device)
        return self.model.get_text_features(**text).pooler_output[0]

    def _image_features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        return self.model.get_image_features(pixel_values=pixels.to(self.model.device, self.model.dtype)).pooler_output


class DinoScorer:
    """DINO-I: the reference against a video's centre frames, on DINO's CLS token."""

    def __init__(self, model, image_processor=None, name: str = DINO_MODEL):
        self.model, self.name = model.eval(), name
        self.image_processor = image_processor or dino_image_processor()

    @classmethod
    def load(cls, source: str = DINO_MODEL, device: str = "cpu") -> DinoScorer:
        from transformers import ViTModel

        return _load(
            lambda: cls(ViTModel.from_pretrained(source, add_pooling_layer=False).to(device)), source, "--dino-model"
        )

    @torch.no_grad()
    def image_score(self, reference: Image.Image, frames: np.ndarray) -> float:
        features = self._features([reference, *_centre(frames)])
        return mean_cosine_100(features[0], features[1:])

    def _features(self, images: Sequence[Image.Image]) -> torch.Tensor:
        pixels = self.image_processor(images=list(images), return_tensors="pt")["pixel_values"]
        output = self.model(pixel_values=pixels.to(self.model.device, self.model.dtype))
        return output.last_hidden_state[:, 0]


def dino_image_processor():
    """Shorter side to 224 (bicubic), 224 centre crop, ImageNet normalisation: stated here, not read from the hub."""
    from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    return BitImageProcessorPil(image_mean=IMAGENET_DEFAULT_MEAN, image_std=IMAGENET_DEFAULT_STD)


@dataclass(frozen=True)
class DynamicDegree:
    """One video's dynamic-degree evidence, VBench's way."""

    pair_scores: tuple[float, ...]
    """Mean of the top 5% flow magnitudes (pixels) of each pair of consecutive sampled frames."""
    threshold: float
    required: int
    """How many pairs must score above `threshold` for the video to count as dynamic."""

    @property
    def moving_pairs(self) -> int:
        return sum(score > self.threshold for score in self.pair_scores)

    @property
    def dynamic(self) -> bool:
        return self.moving_pairs >= self.required


def flow_sample_indices(num_frames: int, fps: float) -> list[int]:
    """Every round(fps / 8)-th frame from the first: about 8 fps whatever the video's rate."""
    if not fps > 0:
        raise S2VError(f"a video's frame rate must be positive, not {fps}.")
    return list(range(0, num_frames, max(1, round(fps / FLOW_FPS))))


def top_flow_magnitude(flow: np.ndarray, share: float = TOP_SHARE) -> float:
    """The mean of the largest `share` of a flow field's per-pixel magnitudes."""
    magnitudes = np.sort(np.hypot(flow[..., 0], flow[..., 1]).ravel())[::-1]
    return float(magnitudes[: max(1, int(magnitudes.size * share))].mean())


def dynamic_degree(frames: np.ndarray, fps: float, flow: FlowFunction) -> DynamicDegree:
    """VBench's dynamic degree for uint8 [T, H, W, 3] `frames` played at `fps`."""
    sampled = frames[flow_sample_indices(len(frames), fps)]
    if len(sampled) < 2:
        raise S2VError(
            f"dynamic degree needs two frames about 1/8 s apart; this video has {len(frames)} at {fps:g} fps."
        )
    scores = tuple(top_flow_magnitude(flow(a, b)) for a, b in zip(sampled[:-1], sampled[1:], strict=True))
    return DynamicDegree(scores, 6.0 * min(frames.shape[1:3]) / 256.0, round(4 * len(sampled) / 16.0))


def motion_smoothness(frames: np.ndarray, interpolate: Interpolator) -> float:
    """VBench's motion smoothness in [0, 1]: each odd frame against its prediction from the frames either side.

    Only odd frames with a neighbour on both sides are scored, as VBench does.
    """
    if len(frames) < 3:
        raise S2VError(f"motion smoothness needs at least 3 frames, not {len(frames)}.")
    errors = [
        np.abs(frames[i].astype(np.int16) - interpolate(frames[i - 1], frames[i + 1]).astype(np.int16)).mean()
        for i in range(1, len(frames) - 1, 2)
    ]
    return (255.0 - float(np.mean(errors))) / 255.0


def flow_midpoint(flow: FlowFunction) -> Interpolator:
    """The frame halfway between two, from the flow both ways (Super SloMo's linear approximation, no refinement)."""

    def interpolate(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        height, width = before.shape[:2]
        forward, backward = (_crop_centre(flow(*pair), height, width) for pair in ((before, after), (after, before)))
        middle = 0.5 * (warp(before, 0.25 * (backward - forward)) + warp(after, 0.25 * (forward - backward)))
        return np.clip(np.rint(middle), 0, 255).astype(np.uint8)  # rounded: truncating turns a float copy off by one

    return interpolate


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Backward warp: `output[x] = image[x + flow[x]]`, bilinear, edges repeated; float [H, W, 3]."""
    height, width = image.shape[:2]
    ys, xs = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    x = (xs + flow[..., 0]) / max(width - 1, 1) * 2 - 1
    y = (ys + flow[..., 1]) / max(height - 1, 1) * 2 - 1
    grid = torch.from_numpy(np.stack([x, y], axis=-1).astype(np.float32))[None]
    source = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    warped = torch.nn.functional.grid_sample(source, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped[0].permute(1, 2, 0).numpy()


def raft_flow(device: str = "cpu", weights: str | Path | None = None) -> FlowFunction:
    """torchvision's RAFT-large as a flow function, fed as VBench feeds its RAFT.

    Frames go in as 2 x / 255 - 1, padded (edges repeated, split evenly) to multiples of 8; the
    flow comes back at the padded size, which is what VBench scores. `weights` is a local
    state-dict file; by default torchvision fetches C_T_V1 into torch's hub cache once.
    """
    try:
        from torchvision.models.optical_flow import Raft_Large_Weights, raft_large
    except (ImportError, OSError, RuntimeError) as error:
        raise S2VError(
            "dynamic degree and motion smoothness use torchvision's RAFT, and torchvision is not usable here "
            f"({first_line(error)}). Install the torchvision built for your torch, e.g. "
            "`pip install torchvision --index-url https://download.pytorch.org/whl/cpu` beside a CPU torch, "
            "or leave these two out with `--metrics clip-t,clip-i,dino-i`."
        ) from None
    try:
        if weights is None:
            model = raft_large(weights=Raft_Large_Weights.C_T_V1, progress=False)
        else:
            model = raft_large(weights=None)
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        raise S2VError(
            f"could not load RAFT ({first_line(error)}). Offline, download "
            f"{Raft_Large_Weights.C_T_V1.url} elsewhere and pass it with --raft-weights."
        ) from None
    model = model.eval().to(device)

    @torch.no_grad()
    def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        pair = [pad_to_multiple(torch.from_numpy(f).permute(2, 0, 1)[None].float() / 127.5 - 1.0) for f in (a, b)]
        estimate = model(pair[0].to(device), pair[1].to(device), num_flow_updates=RAFT_UPDATES)[-1]
        return estimate[0].permute(1, 2, 0).cpu().numpy()

    return flow


def pad_to_multiple(image: torch.Tensor, multiple: int = RAFT_MULTIPLE) -> torch.Tensor:
    """`[..., H, W]` padded to multiples of `multiple`, centred, edges repeated (as RAFT's InputPadder pads)."""
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    padding = [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2]
    return torch.nn.functional.pad(image, padding, mode="replicate")


def _crop_centre(flow: np.ndarray, height: int, width: int) -> np.ndarray:
    """The frame's own flow out of one computed on a centred, padded copy (as `raft_flow` pads)."""
    top, left = (flow.shape[0] - height) // 2, (flow.shape[1] - width) // 2
    return flow[top : top + height, left : left + width]


def _centre(frames: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(frames[i]) for i in centre_indices(len(frames))]


def _load(build: Callable, source: str, flag: str):
    try:
        return build()
    except (OSError, ValueError) as error:
        raise S2VError(missing_model_message(source, Path(source).expanduser().exists(), error, flag)) from None
