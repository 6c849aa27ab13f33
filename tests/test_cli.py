"""`s2v`: generation end to end, the real loading path, and one-line errors."""

from __future__ import annotations

import re

import imageio_ffmpeg
import pytest
from diffusers import CogVideoXDDIMScheduler, CogVideoXPipeline
from PIL import Image
from test_lora import write_authors_file

from s2v.__main__ import main
from s2v.tiny import SCHEDULER_CONFIG, tiny_components

SMALL_FLAGS = ["--preset", "tiny", "--height", "32", "--width", "48", "--frames", "9", "--steps", "2"]


@pytest.fixture
def subject_file(tmp_path, subject_array):
    path = tmp_path / "cat.png"
    Image.fromarray(subject_array).save(path)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def video_facts(path) -> tuple[int, tuple[int, int]]:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    frames = sum(1 for _ in reader)
    return frames, tuple(meta["size"])


def test_generate_writes_a_playable_mp4_with_the_requested_frames_and_size(tmp_path, subject_file, capsys):
    out = tmp_path / "cat.mp4"
    code, stdout, stderr = run(
        capsys,
        "generate",
        "--subject",
        subject_file,
        "--prompt",
        "a cat surfing",
        "--out",
        out,
        "--seed",
        "0",
        *SMALL_FLAGS,
    )
    assert code == 0, stderr
    assert video_facts(out) == (9, (48, 32))
    assert "wrote" in stdout and "seed 0" in stdout and "LoRA" not in stdout
    assert "wiring check" in stderr and "noise" in stderr


@pytest.fixture
def cogvideox_folder(tmp_path):
    """A tiny model saved in THUDM/CogVideoX-5b's layout: stock pipeline class, DDIM scheduler, no <cls>."""
    components = tiny_components(seed=0)
    components["scheduler"] = CogVideoXDDIMScheduler(**SCHEDULER_CONFIG)
    folder = tmp_path / "CogVideoX-5b"
    CogVideoXPipeline(**components).save_pretrained(folder)
    return folder


def test_a_local_folder_in_the_cogvideox_layout_loads_and_generates(tmp_path, cogvideox_folder, subject_file, capsys):
    assert {p.name for p in cogvideox_folder.iterdir()} >= {
        "model_index.json",
        "transformer",
        "vae",
        "text_encoder",
        "tokenizer",
        "scheduler",
    }
    write_authors_file(tmp_path)
    out = tmp_path / "video.gif"
    code, _, stderr = run(
        capsys,
        "generate",
        "--preset",
        "cogvideox-5b",
        "--model",
        cogvideox_folder,
        "--lora",
        tmp_path,
        "--subject",
        subject_file,
        "--prompt",
        "a cat",
        "--out",
        out,
        *SMALL_FLAGS,
    )
    assert code == 0, stderr
    assert Image.open(out).n_frames == 9


def one_line_error(code: int, stderr: str) -> str:
    assert code == 2
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preset", "cogvideox-5b"], "carpedkm/disentangled-subject-to-vid"),
        (["--offload", "model"], "no GPU here"),
        (["--quantize", "int8"], "bitsandbytes, which needs a CUDA GPU"),
        (["--device", "cuda"], "no usable CUDA GPU"),
        (["--out", "cat.avi"], "use a .mp4 or .gif"),
        (["--frames", "12"], "8k\\+1"),
        (["--model", "./no/such/folder"], "not a diffusers model folder"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(tmp_path, subject_file, capsys, flags, message, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(capsys, "generate", "--subject", subject_file, "--prompt", "a cat", *SMALL_FLAGS, *flags)
    assert re.search(message, one_line_error(code, stderr))


def test_an_unreachable_hub_model_names_the_cache_and_the_local_folder_option(tmp_path, subject_file, capsys):
    write_authors_file(tmp_path)
    code, _, stderr = run(
        capsys,
        "generate",
        "--preset",
        "cogvideox-5b",
        "--lora",
        tmp_path,
        "--subject",
        subject_file,
        "--prompt",
        "a cat",
    )
    line = one_line_error(code, stderr)
    assert "THUDM/CogVideoX-5b" in line and "huggingface" in line and "--model" in line


def test_a_bad_subject_file_is_one_clear_line(tmp_path, capsys):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code, _, stderr = run(capsys, "generate", "--preset", "tiny", "--subject", empty, "--prompt", "a cat")
    assert "empty" in one_line_error(code, stderr)


def test_without_cuda_the_default_is_nano_when_its_files_are_there_else_tiny(tmp_path, monkeypatch):
    import s2v.loading

    monkeypatch.setattr(s2v.loading.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(s2v.loading, "NANO_FOLDER", tmp_path)
    assert s2v.loading.default_preset_name() == "tiny"
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "model_index.json").write_text("{}")
    assert s2v.loading.default_preset_name() == "nano"
    monkeypatch.setattr(s2v.loading.torch.cuda, "is_available", lambda: True)
    assert s2v.loading.default_preset_name() == "cogvideox-5b"


def test_the_nano_preset_without_its_weights_says_how_to_build_them(tmp_path, subject_file, capsys, monkeypatch):
    import s2v.loading

    monkeypatch.setattr(s2v.loading, "NANO_FOLDER", tmp_path / "missing")
    code, _, stderr = run(capsys, "generate", "--preset", "nano", "--subject", subject_file, "--prompt", "it moves")
    assert "s2v-nano build --ship" in one_line_error(code, stderr)


def test_info_names_device_versions_memory_mode_and_weight_locations(capsys):
    code, stdout, _ = run(capsys, "info")
    assert code == 0
    for field in ("device", "torch", "diffusers", "memory mode", "weights", "THUDM/CogVideoX-5b"):
        assert field in stdout


def test_quantization_maps_bitsandbytes_onto_the_transformer_and_t5():
    import torch

    from s2v.loading import quantization_config

    assert quantization_config("none", torch.bfloat16) is None
    int8 = quantization_config("int8", torch.bfloat16).quant_mapping
    assert set(int8) == {"transformer", "text_encoder"} and int8["transformer"].load_in_8bit
    assert type(int8["transformer"]).__module__.startswith("diffusers")
    assert type(int8["text_encoder"]).__module__.startswith("transformers")
    nf4 = quantization_config("nf4", torch.bfloat16).quant_mapping["transformer"]
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4" and nf4.bnb_4bit_compute_dtype == torch.bfloat16


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps", "0"], "--steps must be a whole number from 1 to 1000, not 0"),
        (["--steps", "-2"], "--steps must be"),
        (["--frames", "0"], "--frames must be a whole number of at least 1, not 0"),
        (["--frames", "16"], "--frames must be 8k\\+1"),
        (["--fps", "0"], "--fps must be a whole number of at least 1, not 0"),
        (["--height", "0"], "--height must be"),
        (["--width", "-16"], "--width must be"),
        (["--guidance", "nan"], "--guidance must be a number of at least 0.0, not nan"),
        (["--guidance", "inf"], "--guidance must be"),
        (["--guidance", "-1"], "--guidance must be"),
        (["--seed", "-1"], "--seed must be a whole number from 0"),
    ],
)
def test_impossible_numbers_are_refused_naming_the_flag_before_the_model_loads(
    tmp_path, subject_file, capsys, flags, message, monkeypatch
):
    import s2v.loading

    monkeypatch.setattr(s2v.loading, "load_pipeline", lambda settings: pytest.fail("the model was loaded"))
    out = tmp_path / "cat.mp4"
    code, _, stderr = run(capsys, "generate", "--subject", subject_file, "--prompt", "a cat", "--out", out, *flags)
    assert re.search(message, one_line_error(code, stderr)) and not out.exists()


@pytest.mark.parametrize(("where", "message"), [("under-a-file", "Cannot write"), ("a-folder", "is a folder")])
def test_an_output_path_that_cannot_be_written_is_refused_before_the_model_loads(
    tmp_path, subject_file, capsys, monkeypatch, where, message
):
    import s2v.loading

    monkeypatch.setattr(s2v.loading, "load_pipeline", lambda settings: pytest.fail("the model was loaded"))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where a folder should be")
    (tmp_path / "folder.mp4").mkdir()
    out = blocker / "cat.mp4" if where == "under-a-file" else tmp_path / "folder.mp4"
    code, _, stderr = run(capsys, "generate", "--subject", subject_file, "--prompt", "a cat", "--out", out)
    assert message in one_line_error(code, stderr)


def test_zero_seed_and_zero_guidance_are_used_as_given(tmp_path, subject_file, capsys):
    out = tmp_path / "cat.gif"
    code, stdout, stderr = run(
        capsys,
        "generate",
        "--subject",
        subject_file,
        "--prompt",
        "a cat",
        "--out",
        out,
        "--seed",
        "0",
        "--guidance",
        "0",
        *SMALL_FLAGS,
    )
    assert code == 0, stderr
    assert "seed 0" in stdout and Image.open(out).n_frames == 9


def test_scale_writes_each_pixel_as_a_block_and_nano_scales_by_default(tmp_path, subject_file, capsys):
    from s2v import PRESETS

    out = tmp_path / "big.mp4"
    code, _, stderr = run(
        capsys, "generate", "--subject", subject_file, "--prompt", "a cat", "--out", out, "--scale", "2", *SMALL_FLAGS
    )
    assert code == 0, stderr
    assert video_facts(out) == (9, (96, 64))
    assert PRESETS["nano"].display_scale > 1 and PRESETS["tiny"].display_scale == 1


def test_the_python_call_reproduces_the_command_line_on_the_presets_defaults(
    tmp_path, subject_file, capsys, monkeypatch
):
    """Steps and guidance come from the preset in both, so `pipe(image, prompt)` is `s2v generate` bit for bit."""
    import numpy as np

    import s2v.video
    from s2v import LoadSettings, load_pipeline

    written = []
    monkeypatch.setattr(s2v.video, "save_video", lambda frames, out, **_: written.append(frames) or out)
    code, stdout, stderr = run(capsys, "generate", "--preset", "nano", "--subject", subject_file, "--prompt",
                               "it moves left on grass", "--seed", "5", "--out", tmp_path / "a.mp4")  # fmt: skip
    assert code == 0, stderr
    assert re.search(r"LoRA \S+ at [0-9.]+x \(rank \d+\)", stdout), stdout  # which LoRA, at what strength
    pipe = load_pipeline(LoadSettings(preset="nano"))
    assert pipe.preset.num_inference_steps != 50  # not diffusers' default: the check below would be vacuous
    assert np.array_equal(pipe(str(subject_file), "it moves left on grass", seed=5).frames, written[0])
