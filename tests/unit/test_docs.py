"""The README's event catalogue lists every event the system can publish, on its real subject."""

from __future__ import annotations

import typing
from pathlib import Path

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
