"""The generated NATS permissions follow the code they guard, and the operator's CLI keeps only hashes."""

from __future__ import annotations

import json
from pathlib import Path

import bcrypt
import pytest

from cli.main import main
from services.aggregator.domain import site_of_subject
from services.executor import agent as agent_module
from services.executor import intake as intake_module
from services.executor import keys as keys_module
from services.executor import withdrawals as withdrawals_module
from services.executor.app import create_agent
from services.executor.settings import SiteSettings
from shared.commands import Command
from shared.nats_config import SITE_ANSWERS, SITE_ASKS, SITE_CONSUMES, site_permissions
from shared.settings import Settings


def test_a_sites_permissions_cover_exactly_what_its_agent_consumes_and_asks() -> None:
    host = create_agent(
        Settings(nats_url="nats://localhost:4222", nats_user="site-x"), SiteSettings(name="x", owner="o")
    )
    consumed = {sub.subject.broker_address for sub in host.broker.subscribers}
    assert consumed == {event.subscription() for event in SITE_CONSUMES}
    asked = {
        v
        for module in (agent_module, intake_module, withdrawals_module, keys_module)
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Command) and v is not Command
    }
    assert asked == set(SITE_ASKS)
    allowed = site_permissions("x")["publish"]["allow"]
    assert "medperf.site.x.>" in allowed and not any(
        s.startswith(("medperf.approvals", "medperf.registry")) for s in allowed
    )
    assert not any(s.startswith("$JS.API.STREAM") for s in allowed)  # no stream management, no direct reads
    # It answers exactly the commands its agent answers, on its own site's subjects only.
    assert set(host.answers.handlers) == set(SITE_ANSWERS)
    assert site_permissions("x")["subscribe"]["allow"] == [
        "_INBOX.site-x.>",
        "medperf.cmd.site.x.release_results",
        "medperf.cmd.site.x.release_log",
    ]
    assert {host.answers.subject(command) for command in SITE_ANSWERS} == set(
        site_permissions("x")["subscribe"]["allow"][1:]
    )
    assert site_permissions("x")["allow_responses"] == {"max": 1}  # replies to what it was asked, once


def test_the_cli_issues_and_revokes_credentials_keeping_only_hashes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, auth = tmp_path / "users.json", tmp_path / "auth.conf"
    options = ["nats", "--store", str(store), "--auth-conf", str(auth)]
    assert main([*options, "issue-site", "hospital-a"]) == 0
    printed = dict(line.split("=", 1) for line in capsys.readouterr().out.split())
    assert printed["MEDPERF_NATS_USER"] == "site-hospital-a"
    [user] = json.loads(store.read_text())["users"]
    assert printed["MEDPERF_NATS_PASSWORD"] not in store.read_text() + auth.read_text()
    assert bcrypt.checkpw(printed["MEDPERF_NATS_PASSWORD"].encode(), user["password_hash"].encode())
    assert '"medperf.site.hospital-a.>"' in auth.read_text()

    assert main([*options, "revoke", "site-hospital-a"]) == 0
    assert "site-hospital-a" not in auth.read_text()
    assert main([*options, "revoke", "site-hospital-a"]) == 1
    assert "no NATS user 'site-hospital-a'" in capsys.readouterr().err
    assert main([*options, "issue-site", "Bad_Name"]) == 1


def test_the_aggregator_reads_the_site_from_the_subject() -> None:
    assert site_of_subject("medperf.site.hospital-a.result.reported") == "hospital-a"
    assert site_of_subject("medperf.approvals.association.approved") is None
