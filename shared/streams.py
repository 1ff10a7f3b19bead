"""Where messages travel: the JetStream streams and the durable consumers' defaults.

Each stream has one owning service (the only one that publishes to it), but every service
declares all of them idempotently at start, so start-up order never matters.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamSource

#: Seconds JetStream remembers a ``Nats-Msg-Id`` and drops a second message with it. An outbox row
#: sent again later than this is looked up on the stream first (``shared.outbox``).
DUPLICATE_WINDOW = 120.0


@dataclass(frozen=True)
class Stream:
    name: str
    subjects: tuple[str, ...]
    description: str
    # -1: keep the whole history. 1: keep only the latest message per subject (a status board).
    max_msgs_per_subject: int = -1
    # A stream with sources copies theirs (keeping each message's subject) instead of capturing subjects.
    sources: tuple[str, ...] = ()

    def config(self, replicas: int = 1) -> StreamConfig:
        # Limits retention with no age limit: the history is the system of record that read models
        # (leaderboards, site projections) can be rebuilt from.
        return StreamConfig(
            max_msgs_per_subject=self.max_msgs_per_subject,
            name=self.name,
            subjects=list(self.subjects) or None,
            sources=[StreamSource(name=source) for source in self.sources] or None,
            description=self.description,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            duplicate_window=DUPLICATE_WINDOW,
            # On a cluster, 3 copies survive the loss of one node (JetStream needs a majority).
            num_replicas=replicas,
        )


REGISTRY = Stream("REGISTRY", ("medperf.registry.>",), "containers, models, benchmarks and datasets registered")
APPROVALS = Stream("APPROVALS", ("medperf.approvals.>",), "benchmark approvals and association decisions")
AGGREGATOR = Stream("AGGREGATOR", ("medperf.aggregator.>",), "benchmarks' sharing policies")
SITES = Stream("SITES", ("medperf.site.>",), "what site agents report: results and job outcomes")
# Heartbeats are not state changes: each site's latest one is all anyone needs, so they skip the
# outbox and the stream keeps one per site.
HEARTBEATS = Stream(
    "HEARTBEATS", ("medperf.heartbeat.>",), "the latest heartbeat of each site agent", max_msgs_per_subject=1
)
DEADLETTER = Stream("DEADLETTER", ("medperf.deadletter.>",), "messages a consumer could not handle, with the reason")

# The console's live feed: every event of the four event streams in one sequence, so "start from
# sequence N" means one thing and a browser can resume where it left off. Nothing publishes to it.
FEED = Stream(
    "FEED",
    (),
    "every event of REGISTRY, APPROVALS, AGGREGATOR and SITES, in arrival order (for the console)",
    sources=(REGISTRY.name, APPROVALS.name, AGGREGATOR.name, SITES.name),
)

ALL_STREAMS = (REGISTRY, APPROVALS, AGGREGATOR, SITES, HEARTBEATS, DEADLETTER, FEED)


def heartbeat_subject(site: str) -> str:
    return f"medperf.heartbeat.{site}"


def deadletter_subject(service: str) -> str:
    return f"medperf.deadletter.{service}"
