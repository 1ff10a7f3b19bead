"""The registry service: owns containers, models, benchmarks, datasets, users and API tokens."""

from __future__ import annotations

from faststream.nats import NatsRouter

from services.registry import handlers, handlers_edit, handlers_keys, handlers_users
from services.registry.store import TABLES, Base
from shared.commands import (
    Authenticate,
    CheckSiteOwner,
    CreateUser,
    DeleteEntity,
    EditEntity,
    GetEntity,
    GetRelations,
    IssueToken,
    ListEntities,
    ListSiteKeys,
    Outcome,
    RegisterContainer,
    RegisterDataset,
    RegisterModel,
    RegisterSiteKey,
    RevokeSiteKey,
    RevokeToken,
    SubmitBenchmark,
)
from shared.events import (
    AssociationRequested,
    BenchmarkApproved,
    BenchmarkRejected,
    BenchmarkSubmitted,
    ContainerRegistered,
    DatasetRegistered,
    EntityDeleted,
    EntityEdited,
    ModelRegistered,
    SiteKeyRegistered,
    SiteKeyRevoked,
    TokenIssued,
    TokenRevoked,
    UserCreated,
)
from shared.service import ServiceHost
from shared.settings import Settings


def create_service(settings: Settings) -> ServiceHost:
    host = ServiceHost("registry", settings, Base.metadata, TABLES, group_commands=True)
    router = NatsRouter()

    @host.answers(RegisterContainer)
    async def register_container(cmd: RegisterContainer) -> Outcome:
        return await handlers.register_container(cmd, host.uow())

    @host.answers(RegisterModel)
    async def register_model(cmd: RegisterModel) -> Outcome:
        return await handlers.register_model(cmd, host.uow())

    @host.answers(SubmitBenchmark)
    async def submit_benchmark(cmd: SubmitBenchmark) -> Outcome:
        return await handlers.submit_benchmark(cmd, host.uow())

    @host.answers(RegisterDataset)
    async def register_dataset(cmd: RegisterDataset) -> Outcome:
        return await handlers.register_dataset(cmd, host.uow())

    @host.answers(EditEntity)
    async def edit_entity(cmd: EditEntity) -> Outcome:
        return await handlers_edit.edit_entity(cmd, host.uow())

    @host.answers(DeleteEntity)
    async def delete_entity(cmd: DeleteEntity) -> Outcome:
        return await handlers_edit.delete_entity(cmd, host.uow())

    @host.answers(CreateUser)
    async def create_user(cmd: CreateUser) -> Outcome:
        return await handlers_users.create_user(cmd, host.uow())

    @host.answers(IssueToken)
    async def issue_token(cmd: IssueToken) -> Outcome:
        return await handlers_users.issue_token(cmd, host.uow())

    @host.answers(RevokeToken)
    async def revoke_token(cmd: RevokeToken) -> Outcome:
        return await handlers_users.revoke_token(cmd, host.uow())

    @host.answers(Authenticate)
    async def authenticate(query: Authenticate) -> Outcome:
        return await handlers_users.authenticate(query, host.uow())

    @host.answers(RegisterSiteKey)
    async def register_site_key(cmd: RegisterSiteKey) -> Outcome:
        return await handlers_keys.register_site_key(cmd, host.uow())

    @host.answers(RevokeSiteKey)
    async def revoke_site_key(cmd: RevokeSiteKey) -> Outcome:
        return await handlers_keys.revoke_site_key(cmd, host.uow())

    @host.answers(ListSiteKeys)
    async def list_site_keys(query: ListSiteKeys) -> Outcome:
        return await handlers_keys.list_site_keys(query, host.uow())

    @host.answers(GetRelations)
    async def get_relations(query: GetRelations) -> Outcome:
        return await handlers_keys.get_relations(query, host.uow())

    @host.answers(CheckSiteOwner)
    async def check_site_owner(query: CheckSiteOwner) -> Outcome:
        return await handlers_keys.check_site_owner(query, host.uow())

    @host.answers(GetEntity)
    async def get_entity(query: GetEntity) -> Outcome:
        return await handlers.get_entity(query, host.uow())

    @host.answers(ListEntities)
    async def list_entities(query: ListEntities) -> Outcome:
        return await handlers.list_entities(query, host.uow())

    host.projects(router, BenchmarkApproved, handlers.record_benchmark_decision)
    host.projects(router, BenchmarkRejected, handlers.record_benchmark_decision)
    host.projects(router, AssociationRequested, handlers.record_association_request)

    host.include(
        router,
        publishes=(
            ContainerRegistered,
            ModelRegistered,
            BenchmarkSubmitted,
            DatasetRegistered,
            EntityEdited,
            EntityDeleted,
            UserCreated,
            TokenIssued,
            TokenRevoked,
            SiteKeyRegistered,
            SiteKeyRevoked,
        ),
    )
    return host
