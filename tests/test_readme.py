"""The README gives exactly two commands -- the main job on the embedded
default and the test suite -- each doing its own set-up, and CI runs the
README's test command verbatim (issue 22)."""

from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _two_commands() -> list[str]:
  text = (ROOT / "README.md").read_text()
  section = text.split("## The two commands", 1)[1].split("\n## ", 1)[0]
  return [b.strip() for b in re.findall(r"```bash\n(.*?)```", section,
                                        re.DOTALL)]


def test_readme_has_exactly_two_commands_that_set_themselves_up():
  main, tests = _two_commands()
  assert main == ("./setup.sh mrt-distill distill --config "
                  "configs/reference_cpu.py --workdir runs/reference_cpu")
  assert tests == "./setup.sh python -m pytest -q"
  setup = ROOT / "setup.sh"
  assert setup.stat().st_mode & 0o111, "setup.sh must be executable"
  body = setup.read_text()
  # Both pip lines honour the constraints; tinysoundfont without pyaudio.
  assert '-c "$HERE/constraints.txt" -e "$HERE[$EXTRAS]"' in body
  assert '-c "$HERE/constraints.txt" --no-deps tinysoundfont' in body
  assert "tinysoundfont==" in (ROOT / "constraints.txt").read_text()


def test_ci_runs_the_readme_test_command_verbatim():
  _, tests = _two_commands()
  ci = (ROOT / ".ci" / "run").read_text().splitlines()
  assert tests in ci
