"""docs/containers.md's minimal benchmark, built with the doc's own commands.

The doc's images start ``FROM python:3.12-slim``; no registry is reachable here, so the test's
private engine gets that tag on the demo's locally built Debian python3 base image first.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import docker

from examples.breast_cancer.images import default_cache_dir, ensure_base_image

ROOT = Path(__file__).parents[2]
DOC = (ROOT / "docs" / "containers.md").read_text()


def doc_block(after: str) -> str:
    """The first ```bash block after the sentence ``after``: the commands as a reader copies them."""
    rest = DOC.split(after, 1)[1]
    match = re.search(r"```bash\n(.*?)```", rest, re.S)
    assert match, f"no bash block after {after!r} in docs/containers.md"
    return match.group(1)


def python_slim_for_the_doc() -> None:
    """The tag the doc's Dockerfiles start from, on the demo's locally built python3 base image."""
    engine = docker.from_env(timeout=600)
    try:
        ensure_base_image(engine, default_cache_dir(), log=lambda _: None)
        engine.images.get("localhost/medperf-python:bookworm").tag("python", "3.12-slim")
    finally:
        engine.close()


def build_minimal(workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run the doc's build block in ``workdir`` (which sees the repository's examples/)."""
    python_slim_for_the_doc()
    (workdir / "examples").symlink_to(ROOT / "examples")
    script = doc_block("Build the images and write each spec with its image's ID:")
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done
