"""The web app the ingress serves is what its sources build: web/ rebuilt with the pinned packages
of package-lock.json gives the committed services/ingress/web/ files byte for byte, and nothing in
the page loads from another origin (no CDN: sites and CI have no internet)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
WEB = ROOT / "web"
BUILT = ROOT / "services" / "ingress" / "web"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (WEB / "node_modules" / "esbuild").exists():
        reason = "Node.js and web/node_modules are needed (scripts/setup runs npm ci in web/)"
        if os.environ.get("MEDPERF_REQUIRE_ENGINE"):
            pytest.fail(reason)  # scripts/test set everything up, so a skip would hide a failure
        pytest.skip(reason)
    return node


def test_the_committed_build_is_what_the_sources_build(tmp_path: Path) -> None:
    subprocess.run([_node(), str(WEB / "build.mjs"), str(tmp_path)], check=True, cwd=WEB, timeout=120)
    for name in ("app.js", "app.css", "app.js.LEGAL.txt"):
        fresh, committed = (tmp_path / name).read_bytes(), (BUILT / name).read_bytes()
        assert fresh == committed, f"services/ingress/web/{name} is stale: run `npm run build` in web/ and commit it"


def test_every_package_is_pinned_to_one_version() -> None:
    manifest = json.loads((WEB / "package.json").read_text())
    lock = json.loads((WEB / "package-lock.json").read_text())
    for name, version in {**manifest["dependencies"], **manifest["devDependencies"]}.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: pin an exact version, not {version!r}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert all("integrity" in entry for path, entry in lock["packages"].items() if path), "every package has a hash"


def test_the_page_loads_nothing_from_another_origin() -> None:
    page = (BUILT / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "//cdn" not in (BUILT / "app.js").read_text()
