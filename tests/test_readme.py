"""The README's commands agree with CI and the package; its usage example runs; its links resolve."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def normalise(step: str) -> tuple[str, ...]:
    """One shell step as words, with spellings that do the same thing made equal:
    ``python -m pip`` = ``pip``, ``python -m pytest`` = ``pytest``, pip's ``-q`` dropped."""
    words = shlex.split(step.strip())
    if words[:2] in (["python", "-m"], ["python3", "-m"]) and len(words) > 2 and words[2] in ("pip", "pytest"):
        words = words[2:]
    if words[:2] == ["pip", "install"]:
        words = [w for w in words if w != "-q"]
    return tuple(words)


def readme_commands() -> tuple[str, str]:
    commands = [b.strip() for b in bash_blocks(README) if b.strip().startswith("python3 -m venv")]
    assert len(commands) == 2, "the README must give exactly two fresh-machine commands (main job, tests)"
    return commands[0], commands[1]


def ci_steps() -> list[tuple[str, ...]]:
    steps = []
    for line in CI.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and not line.startswith("set ") and not line.startswith("cd "):
            steps.extend(normalise(s) for s in line.split("&&"))
    return steps


def test_readme_test_command_is_what_ci_runs():
    """Every step of the README's test command appears in .ci/run, in the same order."""
    _, tests = readme_commands()
    wanted = [normalise(s) for s in tests.split("&&")]
    assert wanted[-1][0] == "pytest"
    steps = ci_steps()
    position = 0
    for step in wanted:
        assert step in steps[position:], f"README step {' '.join(step)!r} is not in .ci/run (in this order)"
        position = steps.index(step, position) + 1


def test_readme_main_command_installs_and_runs_the_cli():
    main, tests = readme_commands()
    assert main.endswith("gdn2 check && gdn2 train")
    assert "pip install torch==2.13.0 -e ." in main
    assert 'pip install torch==2.13.0 -e ".[dev]"' in tests
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^gdn2 = "gdn2\.cli:main"$', pyproject, flags=re.M)


def test_readme_usage_example_runs():
    block = re.search(r"## Usage\n\n```python\n(.*?)```", README, flags=re.S)
    assert block, "README has a python usage example under ## Usage"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 16
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    import torch

    assert namespace["y"].shape == (2, 100, 256)
    assert torch.allclose(namespace["y_last"], namespace["y"][:, 99:], atol=1e-5)
    assert namespace["text"].shape == (1, 20)


def test_readme_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"
    assert "docs/index.md" in README and "mkdocs serve" in README
    assert (ROOT / "reference" / "data" / "README.md").exists()
