"""A small HTTP client for the ingress, used by the CLI and the demo."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from shared.private_files import write_private

CONFIG_DIR = Path(os.environ.get("MEDPERF_CONFIG_DIR", Path.home() / ".medperf_config"))
CREDENTIALS = CONFIG_DIR / "credentials.json"


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def save_credentials(url: str, token: str) -> Path:
    CONFIG_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
    # 0600 even over a file that was world-readable before: the token is the user's identity.
    return write_private(CREDENTIALS, json.dumps({"url": url, "token": token}))


def load_credentials() -> tuple[str, str]:
    url, token = os.environ.get("MEDPERF_URL"), os.environ.get("MEDPERF_TOKEN")
    if (not url or not token) and CREDENTIALS.exists():
        stored = json.loads(CREDENTIALS.read_text())
        url, token = url or stored.get("url"), token or stored.get("token")
    if not url or not token:
        raise ApiError(
            401,
            "not logged in: run `medperf auth login --url URL --token TOKEN` (or set MEDPERF_URL and MEDPERF_TOKEN)",
        )
    return url, token


class Client:
    """One user's view of the federation over HTTP. 503 answers (a service catching up on
    events, or restarting) are retried for ``patience`` seconds."""

    def __init__(self, url: str, token: str, patience: float = 15.0) -> None:
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30.0)
        self.patience = patience

    @classmethod
    def from_credentials(cls) -> Client:
        return cls(*load_credentials())

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        deadline = time.monotonic() + self.patience
        if method == "POST":
            # One key for every attempt: a POST sent again after a lost answer gets that answer
            # (the ingress keeps it for a day), so retrying it is safe.
            headers = kwargs.pop("headers", None) or {}
            kwargs["headers"] = {"Idempotency-Key": str(uuid.uuid4()), **headers}
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError:
                # The answer was lost: asking again is safe for all but PATCH (not idempotent in HTTP).
                if time.monotonic() > deadline or method == "PATCH":
                    raise
                time.sleep(0.2)
                continue
            # 503, and 409 with Retry-After ("still running"), can change; other answers will not.
            retry = response.status_code == 503 or (response.status_code == 409 and "retry-after" in response.headers)
            if not retry or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            raise ApiError(response.status_code, message)
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
                try:
                    message = response.json().get("error", response.text)
                except ValueError:
                    message = response.text
                raise ApiError(response.status_code, message)
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
