"""The README's "Using it" story, run as written: each of its ```bash blocks, read from README.md
itself, in order, each in its person's own terminal (an interactive bash on a pty, their own
HOME), like new users in a fresh checkout: alice starts `medperf serve &`, people paste the tokens
she issued when `medperf auth login` asks, carol exports the MEDPERF_NATS_URL line serve printed,
bob builds the example benchmark with docs/containers.md's block, and everyone checks what they read.

Every bash block of the README is either run here (STORY) or listed with the reason it is not
(NOT_RUN); a new block that is neither fails the test, and so does an entry whose block is gone.
Every command of every block is also parsed by tests/unit/test_readme_commands.py (cheap).

The story runs on a network of its own (tests/integration/terminals.py), so the README's fixed ports
(8080, 8000) are free; the Docker Engine is the test session's.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from minimal import ROOT, doc_block, python_slim_for_the_doc
from terminals import Network, Terminal
from waiting import eventually

README = (ROOT / "README.md").read_text()
PEOPLE = ("alice", "bob", "carol", "dave")
SYNOPSIS = "a synopsis with placeholders; every command in it is parsed by tests/unit/test_readme_commands.py"


@dataclass(frozen=True)
class Step:
    """How a person runs one README block: in whose terminal(s), and what they must read."""

    who: tuple[str, ...]
    shows: tuple[str, ...] = ()  # texts the block prints
    then: str = ""  # a regex a background process of the block prints afterwards
    first: str = ""  # a docs block the README sends the person to first, run as written too
    paste_nats_url: bool = False  # the person exports the MEDPERF_NATS_URL line `medperf serve` printed
    again_until: tuple[str, ...] = ()  # the person runs the block again until it shows these


BUILD = "Build the images and write each spec with its image's ID:"

#: The README's story, keyed by each block's first line (its comment left out), in README order.
STORY = {
    "medperf admin bootstrap alice": Step(
        ("alice",), shows=("admin alice's token",), then=r"MEDPERF_NATS_URL=(nats://127\.0\.0\.1:\d+)"
    ),
    "medperf admin create-user bob; medperf admin issue-token bob": Step(
        ("alice",), shows=("created user bob; give them a token: medperf admin issue-token bob", "token 3 for dave")
    ),
    "export MEDPERF_CONFIG_DIR=~/.medperf-bob": Step(("bob",), shows=("logged in to http://127.0.0.1:8080",)),
    "python3 -m http.server --bind 127.0.0.1 8000 2> http.log &": Step(
        ("bob",),
        first=BUILD,
        shows=(
            "registered container 3",
            "registered model 1",
            "the workflow ran on the demo data: accuracy 0.8571, sensitivity 0.75",
            "submitted benchmark 1",
        ),
    ),
    "medperf benchmark ls --status PENDING": Step(("alice",), shows=("PENDING", "benchmark 1 approved")),
    "export MEDPERF_CONFIG_DIR=~/.medperf-carol": Step(
        ("carol",),
        paste_nats_url=True,
        shows=("cases: 7", "dataset 1 (ward-7) asked to join benchmark minimal: PENDING"),
    ),
    "medperf association ls --benchmark 1 --status PENDING": Step(
        ("bob",), shows=("hospital-a", "dataset 1 on benchmark 1: approved")
    ),
    "export MEDPERF_CONFIG_DIR=~/.medperf-dave": Step(
        ("dave",),
        shows=(
            "Passed: ran on the model owner's own data with `medperf test run`",
            "0.8571",
            "registered container 4",
            "registered model 2",
            "model 2 asked to join benchmark 1 with test",
        ),
    ),
    "medperf association approve -b 1 -m 2 -y": Step(("bob",), shows=("model 2 on benchmark 1: approved",)),
    "medperf leaderboard 1": Step(("bob",), again_until=("threshold (baseline)", "my-model", "hospital-a")),
    "medperf result view 1 --model 2": Step(("bob",), shows=("my-model", "hospital-a")),
    "medperf result ls --local": Step(("carol",), shows=("ward-7", "succeeded", "matches")),
    "medperf console pending": Step(("alice",), shows=("hospital-a",)),
    "kill %1": Step(("alice", "bob", "carol")),
}

#: The README blocks not run here, and why.
NOT_RUN = {
    "scripts/demo": "installs packages and starts a Docker Engine, then runs the demo or the whole suite: CI runs "
    "scripts/test, and tests/integration/test_demo_flow.py runs the demo's flow",
    "medperf admin bootstrap NAME": SYNOPSIS + "; tests/integration/test_cli_terminal.py runs `medperf serve` bare",
    "medperf job ls": SYNOPSIS + "; the site commands run in tests/integration/test_site_jobs.py and friends",
    "medperf console events [--benchmark ID] [--site NAME] [--entity model:7|dataset:3|job:12|user:alice]": SYNOPSIS,
    "medperf site key show": SYNOPSIS + "; tests/integration/test_signed_results.py covers the keys",
    "medperf benchmark set-auto-approval ID --kind dataset --mode ALLOWLIST --allow carol": SYNOPSIS,
}


def bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, re.S)


def first_line(block: str) -> str:
    line = next(line for line in block.splitlines() if line.strip())
    return re.sub(r"\s+#.*$", "", line).strip()


def test_every_readme_block_is_run_or_says_why_not() -> None:
    keys = [first_line(block) for block in bash_blocks(README)]
    assert len(keys) == len(set(keys)), f"two README blocks start alike; make their first lines differ: {keys}"
    for key in keys:
        assert (key in STORY) != (key in NOT_RUN), (
            f"README block `{key}` is neither run by tests/integration/test_readme_runs.py (STORY) nor listed "
            "there with the reason it cannot run (NOT_RUN)"
        )
    assert [k for k in keys if k in STORY] == list(STORY), "STORY must list the README's blocks in README order"
    assert set(NOT_RUN) <= set(keys), f"NOT_RUN names blocks the README no longer has: {set(NOT_RUN) - set(keys)}"


@pytest.fixture
async def terminals(tmp_path: Path) -> AsyncIterator[dict[str, Terminal]]:
    """Each person's terminal, in a fresh checkout (the repository's examples/) on one new network."""
    try:
        network = Network()
    except OSError as exc:
        pytest.skip(f"the README's story needs a network namespace of its own (unshare -n): {exc}")
    checkout, scripts = tmp_path / "checkout", tmp_path / "typed"
    checkout.mkdir()
    scripts.mkdir()
    (checkout / "examples").symlink_to(ROOT / "examples")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDPERF_")}
    people: dict[str, Terminal] = {}
    try:
        for who in PEOPLE:
            home = tmp_path / "home" / who  # each person's own: their CLI profile, token and keys
            home.mkdir(parents=True)
            env = {
                **clean,
                "HOME": str(home),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{clean.get('PATH', '')}",
                "TERM": "xterm",
            }
            people[who] = Terminal(who, network.enter, env, checkout, scripts)
        yield people
    finally:
        for terminal in people.values():
            await terminal.close()
            (tmp_path / f"{terminal.name}.txt").write_text(terminal.since(0))  # what each person read
        network.close()


@pytest.mark.engine
@pytest.mark.usefixtures("docker_engine")
async def test_the_readme_story_runs_as_written(terminals: dict[str, Terminal]) -> None:
    python_slim_for_the_doc()  # docs/containers.md builds FROM python:3.12-slim; no registry here
    tokens: dict[str, str] = {}  # what alice's `medperf admin issue-token` printed, per person
    nats_url = ""  # the MEDPERF_NATS_URL line `medperf serve` printed
    blocks = {first_line(block): block for block in bash_blocks(README)}
    for key, step in STORY.items():
        for who in step.who:
            terminal = terminals[who]

            def paste_token(prompt: str, who: str = who) -> str | None:
                return tokens[who] if prompt.startswith("API token") else None

            if step.first:
                await terminal.run(doc_block(step.first), paste_token)
            if step.paste_nats_url:
                await terminal.run(f"export MEDPERF_NATS_URL={nats_url}\n", paste_token)
            printed = await run_until_shown(terminal, blocks[key], step, paste_token)
            for text in step.shows:
                assert text in printed, f"`{key}` in {who}'s terminal did not show {text!r}:\n{printed}"
            if step.then:
                nats_url = (await terminal.shows(step.then)).group(1)
            tokens.update(re.findall(r"token \d+ for (\w+) \(shown once[^\n]*\n(mpf_\S+)", printed))


async def run_until_shown(terminal: Terminal, block: str, step: Step, answer: Callable[[str], str | None]) -> str:
    """The block's output; with ``again_until``, of the run that shows it, as a person runs it again."""
    printed = [await terminal.run(block, answer)]

    async def shown() -> bool:
        if not all(text in printed[-1] for text in step.again_until):
            printed.append(await terminal.run(block, answer))
        return all(text in printed[-1] for text in step.again_until)

    await eventually(shown, f"`{first_line(block)}` to show {step.again_until}", timeout=300, interval=1)
    return printed[-1]
