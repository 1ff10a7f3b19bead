"""Every `medperf ...` line in the README's bash blocks parses with the real parser, placeholders
filled with sample values: the README cannot name a verb or an option that does not exist. Cheap, and
it covers the reference blocks too; tests/integration/test_readme_runs.py runs the "Using it" story's
blocks as written, against a real federation."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from cli.main import build_parser

README = (Path(__file__).parents[2] / "README.md").read_text()
SAMPLES = {
    "NAME": "sample",
    "ID": "7",
    "URL": "http://127.0.0.1:8080",
    "USER": "bob",
    "HEX": "a" * 64,
    "TEXT": "why",
    "KEY_ID": "0123abcd",
    "SEQ": "3",
    "BENCHMARK_ID": "1",
    "MODEL_ID": "2",
}


def commands(markdown: str) -> list[str]:
    """The `medperf` commands of the ```bash blocks: `\\` continuations joined, comments dropped, `;`
    split, a trailing `&` (run in the background) dropped, optional [parts] left out, and `a | b`
    alternatives of the last word expanded."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", markdown, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line)
            for command in line.split(";"):
                command = re.sub(r"\[[^\]]*\]", "", command).strip().removesuffix("&").strip()
                if not command.startswith("medperf"):
                    continue
                first, *others = command.split(" | ")
                base = first.rsplit(" ", 1)[0] if others else first
                found += [first] + [f"{base} {other}" for other in others]
    return found


def filled(command: str) -> list[str]:
    return [SAMPLES.get(word, word) for word in shlex.split(command)[1:]]


def test_the_readme_shows_the_cli() -> None:
    shown = commands(README)
    assert len(shown) > 40
    for verb in ("medperf serve", "medperf admin bootstrap NAME", "medperf benchmark submit", "medperf auth login"):
        assert any(c.startswith(verb) for c in shown), verb


@pytest.mark.parametrize("command", commands(README))
def test_every_readme_command_parses(command: str) -> None:
    try:
        parsed = build_parser().parse_args(filled(command))
    except SystemExit as exc:
        pytest.fail(f"README: `{command}` does not parse ({exc.code})")
    assert callable(parsed.run)
