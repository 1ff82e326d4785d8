"""The README stays true: every setting is documented, and the two set-up commands it names exist."""

from __future__ import annotations

import re
from pathlib import Path

from parley.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [
        f"PARLEY_{name.upper()}" for name in Settings.model_fields if f"PARLEY_{name.upper()}" not in readme
    ]
    assert not missing, f"settings missing from README.md: {missing}"


def test_readme_commands_are_make_targets() -> None:
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", readme, flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), (
            f"README names `make {target}`, the Makefile lacks it"
        )
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
