"""Which feed events a signed-in user may see, free of I/O: the live feed's server-side rule.

Admins see every entry. Anyone else sees an event only if it concerns what they own:

- registry events about an entity (a container, model, benchmark or dataset registered, edited or
  deleted) only when the entity is theirs: another's dataset registered at their site is not;
- user and token events only about themselves (never another's tokens);
- every other event (approvals, associations, results, sharing policies, site keys, job events of
  any type, present or future) when one of its fields names something of theirs: a ``benchmark_id``,
  ``model_id`` or ``dataset_id`` they own, a ``site`` they own, an association's component they own,
  an ``owner`` or ``actor`` that is them;
- never heartbeats, dead letters, or anything unreadable (it could be any of these).

A ``log_tail`` (it may quote patient data) reaches only the owner of the site it came from: for
anyone else it is replaced by ``""`` and ``log_tail_withheld: true``; a tail its data owner released
(``job.log_released``) is shown to everyone who sees the job, as ``/console/jobs`` shows it. The
owner of a site's own events is their actor, the owner the site's agent runs for (its credentials let
it publish only under its own subject), not whoever registered a dataset naming that site: anyone may
register one, so that would let a stranger read a hospital's jobs. Events about a site from
elsewhere (a key registered for it) count the site's dataset and key owners, as the registry decides
for ``/sites/{site}/keys``.

Relations change while a feed is open: ``learn`` adds what an event passing by creates for the
viewer (their new dataset, and so its site), so the jobs of a dataset registered a moment ago are
shown without waiting for the next refresh from the registry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

#: Registry events about one entity: type -> (kind, the field holding its id).
ENTITY_EVENTS: dict[str, tuple[str, str]] = {
    "container.registered": ("container", "container_id"),
    "model.registered": ("model", "model_id"),
    "benchmark.submitted": ("benchmark", "benchmark_id"),
    "dataset.registered": ("dataset", "dataset_id"),
}
#: Events naming an entity by ``entity`` and ``entity_id``: edits and deletions.
ENTITY_CHANGES = frozenset({"entity.edited", "entity.deleted"})
#: Events about a person: shown only to that person.
PERSONAL_PREFIXES = ("user.", "token.")
#: Where the registry's events travel (``shared.streams.REGISTRY``).
REGISTRY_SUBJECTS = "medperf.registry."
#: Where a site's events travel: ``medperf.site.<site>.…``; the subject, not the body, names the site.
SITE_SUBJECTS = "medperf.site."
#: Subjects that are not events of the four event streams, whatever reaches the feed.
PRIVATE_SUBJECTS = ("medperf.heartbeat.", "medperf.deadletter.")
#: Which of a viewer's relations holds each kind of entity.
OWNED = {"benchmark": "benchmarks", "model": "models", "dataset": "datasets", "container": "containers"}
#: The id fields that name an owned entity, whatever the event's type (job.progress included).
ID_FIELDS: dict[str, str] = {"benchmark_id": "benchmark", "model_id": "model", "dataset_id": "dataset"}


@dataclass(frozen=True)
class Relations:
    """What a viewer owns, as the registry knows it; ``is_admin`` sees everything."""

    user: str
    is_admin: bool = False
    benchmarks: frozenset[int] = frozenset()
    models: frozenset[int] = frozenset()
    datasets: frozenset[int] = frozenset()
    containers: frozenset[int] = frozenset()
    sites: frozenset[str] = frozenset()

    @classmethod
    def of(cls, user: str, data: dict[str, Any]) -> Relations:
        """From the registry's answer to ``GetRelations``."""
        return cls(
            user,
            benchmarks=frozenset(data.get("benchmarks", ())),
            models=frozenset(data.get("models", ())),
            datasets=frozenset(data.get("datasets", ())),
            containers=frozenset(data.get("containers", ())),
            sites=frozenset(data.get("sites", ())),
        )

    def owns(self, kind: str, ident: Any) -> bool:
        field = OWNED.get(kind)
        return field is not None and type(ident) is int and ident in getattr(self, field)

    def learn(self, entry: dict[str, Any]) -> Relations:
        """These relations with what the feed ``entry`` creates for the viewer (an entity they
        registered, a key of their site); themselves when it creates nothing. Only the registry's
        own subjects count: a site may publish any body on its subjects, but not a registration."""
        event = entry.get("event")
        if (
            self.is_admin
            or not str(entry.get("subject", "")).startswith(REGISTRY_SUBJECTS)
            or not isinstance(event, dict)
            or event.get("owner") != self.user
        ):
            return self
        kind_field = ENTITY_EVENTS.get(str(event.get("type")))
        found = self
        if kind_field is not None and isinstance(ident := event.get(kind_field[1]), int):
            name = OWNED[kind_field[0]]
            found = replace(found, **{name: getattr(found, name) | {ident}})
        if event.get("type") in ("dataset.registered", "site_key.registered") and isinstance(event.get("site"), str):
            found = replace(found, sites=found.sites | {event["site"]})
        return found


def visible(entry: dict[str, Any], viewer: Relations) -> dict[str, Any] | None:
    """The feed entry (``seq``, ``subject``, ``stored_at``, ``event``) as ``viewer`` may see it, or
    None when they may not see it at all."""
    if viewer.is_admin:
        return entry
    subject = str(entry.get("subject", ""))
    event = entry.get("event")
    if subject.startswith(PRIVATE_SUBJECTS) or not isinstance(event, dict):
        return None
    kind = event.get("type")
    if not isinstance(kind, str) or kind == "unreadable":
        return None
    if subject.startswith(SITE_SUBJECTS):
        own_site = event.get("actor") == viewer.user
    else:
        own_site = isinstance(event.get("site"), str) and event["site"] in viewer.sites
    if not concerns(event, viewer, own_site):
        return None
    if event.get("log_tail") and kind != "job.log_released" and not own_site:
        return {**entry, "event": {**event, "log_tail": "", "log_tail_withheld": True}}
    return entry


def concerns(event: dict[str, Any], viewer: Relations, own_site: bool = False) -> bool:
    """Does ``event`` (a readable event with a type) concern something ``viewer`` owns? ``own_site``:
    it came from, or is about, a site of theirs (see ``visible``)."""
    kind = str(event["type"])
    if kind.startswith(PERSONAL_PREFIXES):
        return event.get("user") == viewer.user
    if kind in ENTITY_EVENTS:
        entity, id_field = ENTITY_EVENTS[kind]
        return event.get("owner") == viewer.user or viewer.owns(entity, event.get(id_field))
    if kind in ENTITY_CHANGES:
        return viewer.owns(str(event.get("entity")), event.get("entity_id"))
    if event.get("actor") == viewer.user or event.get("owner") == viewer.user:
        return True
    if any(viewer.owns(entity, event.get(name)) for name, entity in ID_FIELDS.items()):
        return True
    if viewer.owns(str(event.get("kind")), event.get("component_id")):  # an association's component
        return True
    return own_site
