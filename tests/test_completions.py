"""The committed completion scripts are what the CLI generates, and they complete."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.gen_completions import ROOT, SHELLS, generate


@pytest.mark.parametrize("shell", SHELLS)
def test_committed_completion_matches_the_cli(shell: str) -> None:
    committed = (ROOT / "completions" / f"phd.{shell}").read_text()
    assert committed == generate(shell), "run `make completions` and commit the result"


def test_bash_completion_completes_commands_and_options() -> None:
    def complete(words: str) -> list[str]:
        env = {**os.environ, "_PHD_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        result = subprocess.run([sys.executable, "-c", "from phdcli.cli import main; main()"],
                                env=env, capture_output=True, text=True)
        return result.stdout.split()

    assert "suggest" in complete("phd sug")
    assert "--jsonl" in complete("phd suggest --js")
    assert {"add", "list", "remove", "path"} <= set(complete("phd history "))


def test_completion_scripts_exist_for_install() -> None:
    assert all((Path(ROOT) / "completions" / f"phd.{s}").stat().st_size > 100 for s in SHELLS)
