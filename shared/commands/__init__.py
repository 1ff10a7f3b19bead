"""Every request a service answers, one pydantic model per command or query.

Commands ask a service to change state; the service answers at once with an ``Outcome``
(accepted, or refused with a reason a user can act on) and records the change as events.
Queries read a service's own state; only the service that owns a table answers questions about it.
Both travel over core NATS request/reply on ``medperf.cmd.<service>.<name>``.

The commands are split by the service that answers them (``base`` holds what all share); import them
from here, ``shared.commands``, as always.
"""

# isort: off
# The order is the old single module's: classes are created, and so listed by ``__subclasses__``, as before.
from shared.commands.base import MAX_ID, Id, RefusalCode, Command, Outcome, SiteName
from shared.commands.registry import (
    RegisterContainer,
    RegisterModel,
    SubmitBenchmark,
    RegisterDataset,
    EditEntity,
    DeleteEntity,
    CreateUser,
    IssueToken,
    RevokeToken,
    RegisterSiteKey,
    RevokeSiteKey,
    ListSiteKeys,
    CheckSiteOwner,
    Authenticate,
    GetEntity,
    ListEntities,
    GetRelations,
)
from shared.commands.approvals import (
    DecideBenchmark,
    RequestAssociation,
    DecideAssociation,
    SetAutoApproval,
    SetPriority,
    ListAssociations,
    AuditTrail,
)
from shared.commands.aggregator import (
    MAX_LEADERBOARD_ROWS,
    DEFAULT_LEADERBOARD_ROWS,
    MAX_PREVIEW_ROWS,
    DEFAULT_PREVIEW_ROWS,
    GetLeaderboard,
    GetProvenance,
    SetSharingPolicy,
    PreviewSharingPolicy,
)
from shared.commands.console import (
    ListSites,
    ListJobs,
    ListHeldResults,
    ListDeadLetters,
    RetryDeadLetter,
    DiscardDeadLetter,
)
from shared.commands.site import MAX_RELEASE_IDS, SiteCommand, ReleaseResults, ReleaseLog
# isort: on

__all__ = [
    "DEFAULT_LEADERBOARD_ROWS",
    "DEFAULT_PREVIEW_ROWS",
    "MAX_ID",
    "MAX_LEADERBOARD_ROWS",
    "MAX_PREVIEW_ROWS",
    "MAX_RELEASE_IDS",
    "AuditTrail",
    "Authenticate",
    "CheckSiteOwner",
    "Command",
    "CreateUser",
    "DecideAssociation",
    "DecideBenchmark",
    "DeleteEntity",
    "DiscardDeadLetter",
    "EditEntity",
    "GetEntity",
    "GetLeaderboard",
    "GetProvenance",
    "GetRelations",
    "Id",
    "IssueToken",
    "ListAssociations",
    "ListDeadLetters",
    "ListEntities",
    "ListHeldResults",
    "ListJobs",
    "ListSiteKeys",
    "ListSites",
    "Outcome",
    "PreviewSharingPolicy",
    "RefusalCode",
    "RegisterContainer",
    "RegisterDataset",
    "RegisterModel",
    "RegisterSiteKey",
    "ReleaseLog",
    "ReleaseResults",
    "RequestAssociation",
    "RetryDeadLetter",
    "RevokeSiteKey",
    "RevokeToken",
    "SetAutoApproval",
    "SetPriority",
    "SetSharingPolicy",
    "SiteCommand",
    "SiteName",
    "SubmitBenchmark",
]
