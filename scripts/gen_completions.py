"""Write completions/phd.{bash,zsh,fish} from the CLI itself (`make completions`).

tests/test_completions.py fails when the committed scripts drift from what
this generates.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHELLS = ("bash", "zsh", "fish")
ROOT = Path(__file__).resolve().parent.parent


def generate(shell: str) -> str:
    env = {**os.environ, "_PHD_COMPLETE": f"source_{shell}"}
    result = subprocess.run(
        [sys.executable, "-c", "from phdcli.cli import main; main()"],
        env=env, capture_output=True, text=True, check=True,
    )
    # The script names the program as the user calls it: `phd`.
    return result.stdout


def main() -> None:
    out = ROOT / "completions"
    out.mkdir(exist_ok=True)
    for shell in SHELLS:
        (out / f"phd.{shell}").write_text(generate(shell))
        print(out / f"phd.{shell}")


if __name__ == "__main__":
    main()
