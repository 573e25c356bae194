"""README.md stays true: its set-up commands are the ones CI runs, its main command works on the toy model, and
every python example runs as written."""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
INSTALL_AND_RUN = ('pip install torch==2.13.0 && pip install -e . && '
                   'sld generate --prompt "an angry green square on a white background" --concept blood --out outputs')
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest'


def code_blocks(language: str) -> list[tuple[str, str]]:
    """(nearest heading above, code) for every fenced block in `language`."""
    blocks, heading = [], ""
    for match in re.finditer(r"^(#+ [^\n]*)$|^```(\w*)\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL):
        if match.group(1):
            heading = match.group(1).lstrip("# ")
        elif match.group(2) == language:
            blocks.append((heading, match.group(3)))
    return blocks


PYTHON = code_blocks("python")


def test_ci_runs_the_readme_setup_commands_in_a_fresh_venv():
    """.ci/run reads the two commands from the README's Set up section (so they cannot drift apart) and runs them in
    a new virtual environment inside the clone."""
    setup = [code for heading, code in code_blocks("bash") if heading == "Set up"]
    assert setup == [INSTALL_AND_RUN + "\n", TEST_COMMAND + "\n"]
    ci = (REPO / ".ci" / "run").read_text()
    extract = re.search(r"^setup_commands\(\) \{.*?^\}", ci, flags=re.MULTILINE | re.DOTALL).group(0)
    found = subprocess.run(["bash", "-c", f"{extract}\nsetup_commands"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout
    assert found.splitlines() == [INSTALL_AND_RUN, TEST_COMMAND]
    assert ci.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in ci
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci


def test_main_command_runs_on_the_toy_model(tmp_path):
    command = shlex.split(INSTALL_AND_RUN.split(" && ")[-1])
    assert command[:2] == ["sld", "generate"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "sld", *command[1:]], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    [image] = (tmp_path / "outputs").glob("*.png")
    assert Image.open(image).size == (64, 64)  # the toy model's native size
    assert "sd1-toy" in result.stderr


def test_readme_has_python_examples():
    headings = {heading for heading, _ in PYTHON}
    assert {"Python API", "Writing a guidance hook", "Writing a sampler"} <= headings


@pytest.mark.parametrize("heading, code", PYTHON, ids=[f"{i}-{heading}" for i, (heading, _) in enumerate(PYTHON)])
def test_python_example_runs(heading, code, tmp_path):
    """Each example in a fresh interpreter, as a reader would paste it (a registered sampler stays out of this one)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}  # one thread: the tiny model gains nothing
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, f"README.md example under '{heading}' failed:\n{result.stderr}"
