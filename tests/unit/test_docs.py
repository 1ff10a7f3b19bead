"""The README's event catalogue lists every event the system can publish, on its real subject;
every site limit is a setting, documented in the README and in docs/reliability.md."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from services.executor.limits import setting
from services.executor.settings import SiteSettings
from shared.events import AnyEvent, SiteEvent

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_every_event_is_in_the_readme_catalogue() -> None:
    union = typing.get_args(typing.get_args(AnyEvent)[0])
    assert len(union) >= 10
    for event_type in union:
        subject = event_type.subscription().replace("medperf.site.*.", "medperf.site.<site>.")
        row = f"| `{subject}` | `{event_type.__name__}` |"
        assert row in README, f"README's event catalogue lacks {event_type.__name__}"
    assert issubclass(union[-1], SiteEvent)


SITE_LIMITS = (
    "task_timeout",
    "extract_max_bytes",
    "extract_max_members",
    "extract_max_ratio",
    "download_max_bytes",
    "download_deadline",
    "results_max_bytes",
    "task_cpus",
    "output_max_bytes",
    "task_memory",
    "task_pids",
    "task_shm_size",
    "task_tmp_size",
    "task_home_size",
    "task_gpus",
    "read_only_root",
)


def test_every_site_limit_is_a_setting_in_the_readme_and_the_limits_table() -> None:
    table = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text().split("## Site limits", 1)[1]
    for field in SITE_LIMITS:
        assert field in SiteSettings.model_fields, field
        assert f"| `{setting(field)}` |" in table, f"docs/reliability.md's Site limits table lacks {field}"
        assert f"`_{field.upper()}`" in README, f"README's site configuration lacks {field}"
    named = set(re.findall(r"`MEDPERF_SITE_(\w+)`", table))
    assert {name.lower() for name in named} <= set(SiteSettings.model_fields), named
