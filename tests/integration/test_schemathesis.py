"""Property-based fuzzing of the HTTP API from its own OpenAPI document (schemathesis): whatever an
admin or an unrelated user sends, valid or not, the answer is never a server error.

The federation runs in a thread with its own event loop, because schemathesis calls the live URL
synchronously (with requests); a small world (an approved benchmark, a dataset, a model) gives the
generated ids something real to hit.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from cli.stack import Stack
from services.ingress.auth import token_digest
from shared.limits import Limits
from shared.settings import Settings

TOKENS = {
    "admin": "t-admin",
    "committee": "t-committee",
    "modeler": "t-modeler",
    "hospital": "t-hospital",
    "stranger": "t-stranger",
}
#: Lower than the defaults, so that generated bodies meet them: a refusal at a limit is a 4xx too.
LIMITS = Limits(http_body_bytes=16 * 1024, json_depth=6, string_bytes=2048)
#: Routes a site's own agent answers. No agent runs here, so a caller who owns a site (the fuzzer
#: claims some with POST /sites/{site}/keys: a site's first key claims it) hears that its agent is
#: not answering: a 503, as the API documents, not a fault.
AT_THE_SITE = {"/sites/{site}/held-results/release", "/sites/{site}/jobs/{job_id}/log-release"}
AGENT_OFFLINE = "is not answering; it acts when it is back online"
# Examples per operation and generation mode; ~40 operations x 2 modes x 2 callers stay under a minute.
EXAMPLES = int(os.environ.get("MEDPERF_FUZZ_EXAMPLES", "5"))
#: Only the operations whose path contains one of these (comma-separated), to fuzz the routes one
#: changed: MEDPERF_FUZZ_PATHS=/sharing-policy. Empty: every operation.
ONLY = tuple(p for p in os.environ.get("MEDPERF_FUZZ_PATHS", "").split(",") if p)


class LiveFederation:
    """The Stack in a background thread, so the test thread can make blocking HTTP calls."""

    def __init__(self, state_dir: Path) -> None:
        self.settings = Settings(
            state_dir=state_dir,
            http_port=0,
            admins=["admin"],
            api_token_digests={token_digest(t): user for user, t in TOKENS.items()},
            request_timeout=3.0,  # a service that hangs shows up as a 503 quickly, not a stalled run
            limits=LIMITS,
        )
        self.url = ""
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="federation", daemon=True)

    def __enter__(self) -> LiveFederation:
        self._thread.start()
        if not self._ready.wait(60) or self._failure is not None:
            raise RuntimeError("the federation did not start") from self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    async def _run(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        try:
            async with Stack(self.settings) as stack:
                assert stack.ingress is not None
                self.url = stack.ingress.url
                await _populate(self.url)
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            raise


async def _populate(url: str) -> None:
    def spec(*tasks: str) -> dict:
        return {"image": "x/y:1", "image_digest": "sha256:" + "a" * 64, "tasks": {t: {"command": [t]} for t in tasks}}

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer t-committee"}) as c:
        admin = {"Authorization": "Bearer t-admin"}

        async def post(path: str, body: dict, **kwargs: object) -> dict:
            for _ in range(200):  # 503 / 404 while a service catches up on events
                response = await c.post(path, json=body, **kwargs)  # type: ignore[arg-type]
                if response.status_code not in (404, 503):
                    break
                await asyncio.sleep(0.05)
            assert response.status_code in (200, 201), response.text
            return response.json()

        prep = (await post("/containers", {"name": "prep", "spec": spec("prepare", "sanity_check", "statistics")}))[
            "id"
        ]
        metrics = (await post("/containers", {"name": "metrics", "spec": spec("evaluate")}))["id"]
        infer = (await post("/containers", {"name": "infer", "spec": spec("infer"), "state": "OPERATION"}))["id"]
        model = (await post("/models", {"name": "ref", "container_id": infer, "state": "OPERATION"}))["id"]
        benchmark = await post(
            "/benchmarks",
            {
                "name": "bench",
                "data_preparator_id": prep,
                "reference_model_id": model,
                "metrics_container_id": metrics,
                "demo_dataset": {"source": "https://example.org/demo.tar.gz", "sha256": "b" * 64},
                "metrics": [{"name": "auc"}],
                "primary_metric": "auc",
            },
        )
        await post(f"/benchmarks/{benchmark['id']}/decision", {"approve": True}, headers=admin)
        dataset = {
            "name": "d",
            "site": "site-a",
            "data_preparator_id": prep,
            "input_hash": "1" * 64,
            "prepared_hash": hashlib.sha256(b"d").hexdigest(),
            "statistics": {"cases": 10},
        }
        await post("/datasets", dataset)
        await post("/users", {"name": "holder"}, headers=admin)
        # A model owner and a data owner of their own, each asking to join.
        modeler = {"Authorization": "Bearer t-modeler"}
        hospital = {"Authorization": "Bearer t-hospital"}
        body = {"name": "theirs", "spec": spec("infer"), "state": "OPERATION"}
        theirs = (await post("/containers", body, headers=modeler))["id"]
        body = {"name": "candidate", "container_id": theirs, "state": "OPERATION"}
        model = (await post("/models", body, headers=modeler))["id"]
        association = {"kind": "model", "component_id": model}
        await post(f"/benchmarks/{benchmark['id']}/associations", association, headers=modeler)
        owned = {**dataset, "name": "h", "site": "site-h", "prepared_hash": hashlib.sha256(b"h").hexdigest()}
        owned["state"] = "OPERATION"
        data = (await post("/datasets", owned, headers=hospital))["id"]
        association = {"kind": "dataset", "component_id": data}
        await post(f"/benchmarks/{benchmark['id']}/associations", association, headers=hospital)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveFederation]:
    with LiveFederation(tmp_path_factory.mktemp("fuzz")) as live:
        yield live


@pytest.mark.parametrize("user", [*TOKENS, "anonymous"])
def test_no_input_makes_the_api_answer_with_a_server_error(federation: LiveFederation, user: str) -> None:
    schema = schemathesis.openapi.from_url(f"{federation.url}/openapi.json")
    headers = {"Authorization": f"Bearer {TOKENS[user]}"} if user in TOKENS else {}
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30, "the OpenAPI document lost its operations"
    for operation in operations:
        if ONLY and not any(part in operation.path for part in ONLY):
            continue
        if operation.path == "/console/events":
            # An endless server-sent stream never finishes a request that waits for its end; its
            # parameters and refusals are tested in test_console.py.
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,  # nothing written into the repository
                derandomize=True,  # the same examples every run: a failure here is reproducible
                phases=[Phase.explicit, Phase.generate],  # report the first failure, do not spend time shrinking
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def fuzz(case: schemathesis.Case) -> None:
                response = case.call(base_url=federation.url, headers=headers, timeout=15)
                if case.path in AT_THE_SITE and response.status_code == 503 and AGENT_OFFLINE in response.text:
                    return  # by design: retrying can succeed once the site's agent is online
                case.validate_response(response, checks=[not_a_server_error], headers=headers)

            try:
                fuzz()
            except Unsatisfiable:  # no invalid input exists (e.g. GET /health takes no parameters)
                continue
            except (Exception, BaseExceptionGroup) as exc:  # keep going: report every operation that failed
                failures.append(f"{operation.label} ({mode}): {str(exc)[:600]}")
    assert not failures, "\n\n".join(failures)
