"""The project's promises about itself: README commands and CI stay in step."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    lines = (ROOT / "README.md").read_text().splitlines()
    return [line for line in lines if line.startswith("python3 -m venv .venv")]


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = [command for command in readme_commands() if "pytest" in command]
    assert len(test_command) == 1
    assert test_command[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_launch_command_uses_a_shipped_example():
    launch = [command for command in readme_commands() if "pytest" not in command]
    assert len(launch) == 1
    example = launch[0].split("--subject ")[1].split()[0]
    assert (ROOT / example).is_file()


def test_examples_carry_their_credits():
    examples = ROOT / "assets" / "examples"
    credits = (examples / "CREDITS.md").read_text()
    for image in examples.glob("*.*"):
        if image.suffix != ".md":
            assert image.name in credits
