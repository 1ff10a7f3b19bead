"""A small HTTP client for the ingress, used by the CLI and the demo."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


class Unreachable(httpx.TransportError):
    """Nothing answers at the federation's URL (refused, no route, name unknown); an httpx
    transport error still, for callers that retry those."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url}: {reason}")
        self.url, self.reason = url, reason


class Client:
    """One user's view of the federation over HTTP. 503 answers (a service catching up on
    events, or restarting) are retried for ``patience`` seconds."""

    def __init__(
        self,
        url: str,
        token: str,
        patience: float = 15.0,
        wait_for_server: bool = True,
        on_wait: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
        self.patience = patience
        # A person at the CLI wants to hear at once that nothing listens; the demo waits for its server.
        self.wait_for_server = wait_for_server
        # Called with why while 503s are retried, then with "" when the wait is over (a spinner).
        self.on_wait = on_wait or (lambda _why: None)

    @classmethod
    def from_credentials(cls, on_wait: Callable[[str], None] | None = None) -> Client:
        from cli.profiles import credentials

        return cls(*credentials(), wait_for_server=False, on_wait=on_wait)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.patience
        waited = False
        if method == "POST":
            # One key for every attempt: a POST sent again after a lost answer gets that answer
            # (the ingress keeps it for a day), so retrying it is safe.
            headers = kwargs.pop("headers", None) or {}
            kwargs["headers"] = {"Idempotency-Key": str(uuid.uuid4()), **headers}
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.ConnectError as exc:
                if not self.wait_for_server or time.monotonic() > deadline:
                    raise Unreachable(self.url, str(exc) or type(exc).__name__) from exc
                time.sleep(0.2)
                continue
            except httpx.TransportError as exc:
                # The answer was lost: asking again is safe for all but PATCH (not idempotent in HTTP).
                if time.monotonic() > deadline or method == "PATCH":
                    raise Unreachable(self.url, f"{type(exc).__name__} {exc}".strip()) from exc
                time.sleep(0.2)
                continue
            # 503, and 409 with Retry-After ("still running"), can change; other answers will not.
            retry = response.status_code == 503 or (response.status_code == 409 and "retry-after" in response.headers)
            if not retry or time.monotonic() > deadline:
                break
            waited = True
            self.on_wait(_message(response))
            time.sleep(0.2)
        if waited:
            self.on_wait("")  # the wait is over, whatever the answer
        if response.status_code >= 400:
            raise ApiError(response.status_code, _message(response))
        return (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else response.text
        )

    def stream_lines(self, path: str, **params: Any) -> Iterator[str]:
        """The lines of a long-lived response (server-sent events), as they arrive."""
        query = {k: v for k, v in params.items() if v is not None}
        with self._http.stream("GET", path, params=query, timeout=httpx.Timeout(30.0, read=None)) as response:
            if response.status_code >= 400:
                response.read()
                raise ApiError(response.status_code, _message(response))
            yield from response.iter_lines()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None})

    # --- the verbs people use ---------------------------------------------------------------

    def register_container(self, name: str, spec: dict[str, Any]) -> int:
        return self.post("/containers", {"name": name, "spec": spec})["id"]

    def register_model(self, name: str, container_id: int) -> int:
        return self.post("/models", {"name": name, "container_id": container_id})["id"]

    def submit_benchmark(self, **fields: Any) -> int:
        return self.post("/benchmarks", fields)["id"]

    def decide_benchmark(self, benchmark_id: int, approve: bool, reason: str = "") -> dict:
        return self.post(f"/benchmarks/{benchmark_id}/decision", {"approve": approve, "reason": reason})

    def request_association(self, benchmark_id: int, kind: str, component_id: int) -> int:
        return self.post(f"/benchmarks/{benchmark_id}/associations", {"kind": kind, "component_id": component_id})["id"]

    def decide_association(
        self, benchmark_id: int, kind: str, component_id: int, approve: bool, reason: str = ""
    ) -> dict:
        return self.post(
            f"/benchmarks/{benchmark_id}/associations/{kind}/{component_id}/decision",
            {"approve": approve, "reason": reason},
        )

    def console_jobs(self, **filters: Any) -> list[dict]:
        """Jobs at the sites and why each failed: every job for an admin; otherwise those of the
        caller's sites, models and benchmarks (filters: site, status, benchmark_id, model_id, limit)."""
        return self.get("/console/jobs", **filters)

    def associations(
        self, benchmark_id: int, kind: str | None = None, status: str | None = None, **filters: Any
    ) -> list[dict]:
        """A benchmark's associations (more filters: component_id, limit, offset)."""
        return self.get(f"/benchmarks/{benchmark_id}/associations", kind=kind, status=status, **filters)

    def set_auto_approval(self, benchmark_id: int, kind: str, mode: str, allowlist: list[str] | None = None) -> dict:
        return self.put(
            f"/benchmarks/{benchmark_id}/auto-approval/{kind}", {"mode": mode, "allowlist": allowlist or []}
        )

    def set_priority(self, benchmark_id: int, model_id: int, priority: int) -> dict:
        return self.put(f"/benchmarks/{benchmark_id}/models/{model_id}/priority", {"priority": priority})

    def audit_trail(self, entity: str, entity_id: int) -> list[dict]:
        """Every decision about a benchmark, dataset or model, oldest first."""
        return self.get(f"/{entity}s/{entity_id}/audit")

    # --- entities ---------------------------------------------------------------------------

    def entity(self, entity: str, entity_id: int) -> dict:
        return self.get(f"/{entity}s/{entity_id}")

    def entities(self, entity: str, mine: bool = False, **filters: Any) -> list[dict]:
        """A page of entities (filters: owner, state, is_valid, approval_status, name_contains,
        limit, offset); ``mine`` keeps my own."""
        return self.get(f"/me/{entity}s" if mine else f"/{entity}s", **filters)

    def edit(self, entity: str, entity_id: int, **changes: Any) -> Any:
        return self.patch(f"/{entity}s/{entity_id}", {"changes": changes})

    def delete_entity(self, entity: str, entity_id: int, reason: str = "") -> Any:
        return self.delete(f"/{entity}s/{entity_id}", reason=reason)

    # --- people and tokens ------------------------------------------------------------------

    def create_user(self, name: str, admin: bool = False) -> dict:
        return self.post("/users", {"name": name, "admin": admin})

    def issue_token(self, user: str, label: str = "") -> dict:
        """``token`` in the answer is the only copy: the federation keeps its hash."""
        return self.post(f"/users/{user}/tokens", {"label": label})

    def revoke_token(self, token_id: int) -> Any:
        return self.delete(f"/tokens/{token_id}")

    def leaderboard(self, benchmark_id: int, limit: int = 100, offset: int = 0) -> dict:
        """One page of the board, in rank order (``total_rows`` says how many there are)."""
        return self.get(f"/benchmarks/{benchmark_id}/leaderboard", limit=limit, offset=offset)

    def provenance(self, benchmark_id: int, model_id: int) -> dict:
        """Per site, where the model's results came from (committee, admins, the model's owner; a
        data owner sees its own datasets')."""
        return self.get(f"/benchmarks/{benchmark_id}/models/{model_id}/provenance")

    def leaderboard_csv(self, benchmark_id: int) -> str:
        return self.get(f"/benchmarks/{benchmark_id}/leaderboard", format="csv")


def _message(response: httpx.Response) -> str:
    try:
        answer = response.json()
    except ValueError:
        return response.text
    return str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)
