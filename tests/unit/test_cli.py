"""The command line: AsyncAPI documents generated from the services' code, and terminal tables."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from cli.render import leaderboard_table, provenance_table
from shared.commands import Command
from shared.events import (
    AssociationApproved,
    BenchmarkApproved,
    BenchmarkSubmitted,
    ResultReported,
)


@pytest.mark.parametrize(
    ("service", "consumes", "publishes"),
    [
        ("registry", BenchmarkApproved, BenchmarkSubmitted),
        ("approvals", BenchmarkSubmitted, AssociationApproved),
        ("executor", AssociationApproved, ResultReported),
    ],
)
def test_asyncapi_lists_what_a_service_consumes_and_publishes(
    service: str, consumes: type, publishes: type, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["asyncapi", service]) == 0
    document = json.loads(capsys.readouterr().out)
    channels = set(document["channels"])
    assert any(c.startswith(publishes.subscription() + ":") for c in channels)
    assert any(c.startswith(consumes.subscription() + ":") for c in channels)
    payloads = json.dumps(document["components"]["schemas"])
    assert "event_id" in payloads and "correlation_id" in payloads  # the envelope is documented


def test_asyncapi_documents_every_command_a_service_answers(capsys: pytest.CaptureFixture[str]) -> None:
    main(["asyncapi", "approvals"])
    channels = json.loads(capsys.readouterr().out)["channels"]
    answered = {c.split(":")[0] for c in channels if c.startswith("medperf.cmd.")}
    expected = {cls.subject() for cls in Command.__subclasses__() if cls.SERVICE == "approvals"}
    assert answered == expected


def test_leaderboard_table_marks_the_baseline_and_missing_results() -> None:
    board = {
        "benchmark": "b",
        "primary_metric": "auc",
        "higher_is_better": True,
        "datasets": ["site-a", "site-b"],
        "rows": [
            {
                "rank": 1,
                "model": "ref",
                "baseline": True,
                "complete": True,
                "metrics": {"auc": {"value": 0.9, "mean": 0.9, "min": 0.85, "max": 0.95}},
                "per_dataset": {"site-a": 0.85, "site-b": 0.95},
            },
            {
                "rank": 2,
                "model": "new",
                "baseline": False,
                "complete": False,
                "metrics": {"auc": {"value": 0.8, "mean": 0.8, "min": 0.8, "max": 0.8}},
                "per_dataset": {"site-a": 0.8, "site-b": None},
            },
        ],
    }
    lines = leaderboard_table(board).splitlines()
    assert "ref (baseline)" in lines[3] and "0.9000" in lines[3]
    assert "new *" in lines[4] and lines[4].rstrip().endswith("-")
    assert "missing results" in lines[-1]


@pytest.mark.parametrize("argv", [["leaderboard", "1"], ["provenance", "1", "2"]])
def test_a_query_without_credentials_says_how_to_log_in(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("MEDPERF_URL", raising=False)
    monkeypatch.delenv("MEDPERF_TOKEN", raising=False)
    monkeypatch.setenv("MEDPERF_CONFIG_DIR", str(tmp_path))
    assert main(argv) == 1
    assert "medperf auth login" in capsys.readouterr().err


def test_provenance_table_shows_each_sites_origin_and_what_changed_since() -> None:
    cell = {
        "site": "hospital-a",
        "dataset": "scans",
        "partial": False,
        "stale": True,
        "container_digests": {"model": "sha256:" + "a" * 64, "metrics": "sha256:" + "b" * 64},
        "dataset_hash": "c" * 64,
        "key_id": "0123456789abcdef",
        "key_revoked_at": "2026-11-01T00:00:00+00:00",
        "reported_at": "2026-10-01T00:00:00+00:00",
        "dataset_association": {"approved_by": "committee", "approved_at": "2026-09-01T00:00:00+00:00"},
    }
    unapproved = {**cell, "site": "hospital-b", "key_revoked_at": None, "dataset_association": None, "stale": False}
    shown = {"model": "m", "benchmark": "b", "model_association": None, "cells": [cell, unapproved]}
    lines = provenance_table(shown).splitlines()
    assert "none approved" in lines[0]
    assert lines[3].startswith("hospital-a") and "scans (stale)" in lines[3]
    assert "sha256:aaaaaaaaaaaa " in lines[3] and "a" * 13 not in lines[3]  # digests shortened to 12
    assert "0123456789abcdef (revoked 2026-11-01" in lines[3] and "committee at 2026-09-01" in lines[3]
    assert lines[4].startswith("hospital-b") and lines[4].endswith("-")  # no approval (revoked since)
    assert "revoked" not in lines[4]
    empty = provenance_table({**shown, "cells": []})
    assert "no results from any site you may see" in empty
