"""The project's promises about itself: README commands and CI stay in step."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line for line in lines if "python3 -m venv .venv" in line]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = [command for command in readme_commands() if "pytest" in command]
    assert len(test_command) == 1
    assert test_command[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_launch_command_starts_the_app():
    launch = [command for command in readme_commands() if "pytest" not in command]
    assert len(launch) == 1
    assert launch[0].endswith("python app.py") and (ROOT / "app.py").is_file()


def test_examples_carry_their_credits():
    examples = ROOT / "assets" / "examples"
    credits = (examples / "CREDITS.md").read_text()
    for image in examples.glob("*.*"):
        if image.suffix != ".md":
            assert image.name in credits


def test_readme_is_a_gradio_space():
    front_matter = (ROOT / "README.md").read_text().split("---")[1]
    assert "sdk: gradio" in front_matter and "app_file: app.py" in front_matter


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Each module under `folder` and the top-level packages it imports (absolute imports only)."""
    import ast

    found = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def test_data_flows_one_way_between_the_rooms():
    """s2v never imports training or the miniature world; s2v_train never imports the world; s2v_nano uses both."""
    forbidden = {"s2v": {"s2v_train", "s2v_nano", "app", "bench"}, "s2v_train": {"s2v_nano", "app", "bench"}}
    for room, banned in forbidden.items():
        for module, names in imported_packages(ROOT / room).items():
            assert not names & banned, f"{module} imports {sorted(names & banned)}"
    assert not (ROOT / "s2v" / "nano").exists()


def test_installed_packages_cannot_collide_with_other_distributions():
    """A top-level `train` or `nano` in site-packages would shadow (or be shadowed by) someone else's."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = project["tool"]["setuptools"]["packages"]
    assert packages and all(name == "s2v" or name.startswith("s2v_") for name in packages)
    for name in packages:
        assert (ROOT / name / "__init__.py").is_file()
    assert set(project["project"]["scripts"]) == {"s2v", "s2v-train", "s2v-nano"}


def test_the_commands_and_bench_scripts_run_from_any_folder(tmp_path):
    """After `pip install -e .` (the README's test command does it), nothing depends on the working folder."""
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYTHONPATH": ""}
    commands = [
        [str(bin_dir / "s2v"), "info"],
        [str(bin_dir / "s2v-train"), "--help"],
        [str(bin_dir / "s2v-nano"), "--help"],
        [sys.executable, str(ROOT / "bench" / "nano_video.py"), "--help"],
    ]
    pipes = dict(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    running = [subprocess.Popen(command, cwd=tmp_path, env=env, **pipes) for command in commands]
    for command, process in zip(commands, running, strict=True):
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, f"{command}: {err.decode()[-2000:]}"
        assert out.strip(), command
