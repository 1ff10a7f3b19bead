"""Every file the project writes that holds a secret ends up 0600 whatever mode a file at that path
had, and no copy of the secret is ever on disk readable by others, even when the write is cut
short (shared/private_files.py, and each writer that uses it)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

import shared.signing
from cli.main import main
from services.executor.assets import load_synapse_token, save_synapse_token
from shared.nats_config import CredentialStore
from shared.private_files import write_private
from shared.signing import SiteKey

SECRET = "mpf_not-for-anyone-else"


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    """umask 0: a file created without an explicit mode would be world-readable (and writable)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def readable_by_others(directory: Path) -> list[str]:
    return [f"{p.name} {mode(p):o}" for p in directory.rglob("*") if p.is_file() and mode(p) & 0o077]


# --- the helper -----------------------------------------------------------------------------------


def test_an_existing_world_readable_file_is_replaced_by_a_private_one(tmp_path: Path) -> None:
    target = tmp_path / "secret.json"
    target.write_text("old")
    target.chmod(0o644)
    write_private(target, SECRET)
    assert mode(target) == 0o600 and target.read_text() == SECRET
    assert [p.name for p in tmp_path.iterdir()] == ["secret.json"]  # no temporary file left behind


def test_the_secret_is_private_before_it_takes_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The moment the file appears under its name (rename or link) it is complete and 0600."""
    seen: list[tuple[int, bytes]] = []
    real_replace = os.replace

    def watching_replace(src: str | Path, dst: str | Path) -> None:
        seen.append((mode(Path(src)), Path(src).read_bytes()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    write_private(tmp_path / "token", SECRET.encode())
    assert seen == [(0o600, SECRET.encode())]


def test_a_symlink_at_the_path_is_replaced_not_written_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text("untouched")
    elsewhere.chmod(0o644)
    (tmp_path / "link").symlink_to(elsewhere)
    write_private(tmp_path / "link", SECRET)
    assert not (tmp_path / "link").is_symlink() and mode(tmp_path / "link") == 0o600
    assert elsewhere.read_text() == "untouched"


def test_exclusive_never_replaces_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_private(target, "first", exclusive=True)
    with pytest.raises(FileExistsError):
        write_private(target, "second", exclusive=True)
    assert target.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["key"]


# --- every writer ---------------------------------------------------------------------------------


def _cli_credentials(directory: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("MEDPERF_CONFIG_DIR", str(directory))
    assert main(["auth", "login", "--url", "https://medperf.example", "--token", SECRET]) == 0
    assert json.loads((directory / "profiles.json").read_text())["profiles"]["default"]["token"] == SECRET
    return [directory / "profiles.json"]


def _synapse_token(directory: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    save_synapse_token(SECRET, directory)
    assert load_synapse_token(directory) == SECRET
    return [directory / "synapse.json"]


def _nats_credentials(directory: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    store, conf = directory / "nats-users.json", directory / "auth.conf"
    assert main(["nats", "--store", str(store), "--auth-conf", str(conf), "issue-site", "hospital-a"]) == 0
    assert "site-hospital-a" in conf.read_text() and "site-hospital-a" in CredentialStore(store).users
    return [store, conf]


WRITERS: dict[str, tuple[Callable[[Path, pytest.MonkeyPatch], list[Path]], tuple[str, ...]]] = {
    "cli profiles.json": (_cli_credentials, ("profiles.json",)),
    "synapse token": (_synapse_token, ("synapse.json",)),
    "medperf nats store and auth.conf": (_nats_credentials, ("nats-users.json", "auth.conf")),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_makes_an_existing_world_readable_file_private(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write, names = WRITERS[writer]
    for name in names:
        (tmp_path / name).write_text('{"users": []}' if name.endswith(".json") else "")
        (tmp_path / name).chmod(0o644)
    written = write(tmp_path, monkeypatch)
    assert {p.name: mode(p) for p in written} == dict.fromkeys(names, 0o600)
    assert readable_by_others(tmp_path) == []


@pytest.mark.parametrize("writer", WRITERS)
def test_a_writer_cut_short_leaves_no_readable_copy(
    writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write-then-chmod leaves the secret readable by others until the chmod; here the chmod
    never comes (as if the process died there), and no file may be left readable."""

    def dies(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed before the chmod")

    monkeypatch.setattr(os, "chmod", dies)
    monkeypatch.setattr(Path, "chmod", dies)
    write, _ = WRITERS[writer]
    with contextlib.suppress(SystemExit):
        write(tmp_path, monkeypatch)
    assert readable_by_others(tmp_path) == []


def test_the_site_signing_key_is_created_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "work" / "signing.key"
    key = SiteKey.load_or_create(path)
    assert mode(path) == 0o600 and SiteKey.load_or_create(path).key_id == key.key_id
    assert [p.name for p in path.parent.iterdir()] == ["signing.key"]
    # A key file others can read is refused, not silently rewritten: the key may have leaked.
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        SiteKey.load_or_create(path)
    assert mode(path) == 0o644


def test_of_two_agents_creating_the_key_at_once_both_use_the_one_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "signing.key"
    other = SiteKey.generate()
    other_pem = other._private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    def another_agent_first(target: Path, data: bytes | str, *, exclusive: bool = False) -> Path:
        write_private(target, other_pem, exclusive=True)  # the other agent's key lands first
        return write_private(target, data, exclusive=exclusive)

    monkeypatch.setattr(shared.signing, "write_private", another_agent_first)
    assert SiteKey.load_or_create(path).key_id == other.key_id
    assert [p.name for p in tmp_path.iterdir()] == ["signing.key"]
