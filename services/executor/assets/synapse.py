"""Files named ``synapse:syn123``, downloaded with the official client and the site's own token."""

from __future__ import annotations

import asyncio
import re
import tempfile
from pathlib import Path

from services.executor.assets.base import Source, StreamHasher
from services.executor.assets.credentials import load_synapse_token
from services.executor.assets.errors import DownloadFailed, SynapseLoginRequired

_SYNAPSE_ID = re.compile(r"^synapse:(syn\d+)$")


class SynapseSource(Source):
    """Downloads Synapse entities with ``synapseclient`` into a scratch dir, then hashes them in.

    The site's size limits apply as far as they can: Synapse records each file's size, which is
    checked before the download starts, and the copy into the cache is counted byte by byte. The
    client's own transfer runs in a thread that cannot be interrupted, so when the cache's deadline
    passes the job stops waiting but the thread runs on until synapseclient gives up.

    Endpoints default to the public Synapse service (``None`` lets synapseclient choose); tests and
    private deployments pass their own.
    """

    def __init__(
        self,
        config_dir: Path,
        *,
        repo_endpoint: str | None = None,
        auth_endpoint: str | None = None,
        file_handle_endpoint: str | None = None,
        portal_endpoint: str | None = None,
        chunk_size: int = 1 << 20,
    ) -> None:
        self.config_dir = config_dir
        self.repo_endpoint = repo_endpoint
        self.auth_endpoint = auth_endpoint
        self.file_handle_endpoint = file_handle_endpoint
        self.portal_endpoint = portal_endpoint
        self.chunk_size = chunk_size

    def matches(self, source: str) -> bool:
        return bool(_SYNAPSE_ID.match(source))

    async def fetch(self, source: str, dest: Path, hasher: StreamHasher) -> None:
        match = _SYNAPSE_ID.match(source)
        if match is None:
            raise DownloadFailed(source, "not a Synapse ID of the form 'synapse:syn12345'")
        # Checked before any network traffic so a site that never logged in gets the fix at once.
        token = load_synapse_token(self.config_dir)
        if token is None:
            raise SynapseLoginRequired(
                f"{source} is hosted on Synapse and no Synapse login is stored in {self.config_dir}"
            )
        # The scratch dir sits next to dest (the cache's tmp dir): same filesystem, and removed even
        # when the download fails, so synapseclient's copies never accumulate.
        # Cleanup errors are ignored: past the deadline the client's thread may still be writing here.
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix="synapse-", ignore_cleanup_errors=True) as scratch:
            # synapseclient is synchronous and runs its own event loop, so it gets a thread.
            downloaded = await asyncio.to_thread(self._download, token, match.group(1), source, Path(scratch), hasher)
            with downloaded.open("rb") as src, dest.open("wb") as out:
                hasher.expect(downloaded.stat().st_size)
                while chunk := src.read(self.chunk_size):
                    hasher.update(chunk)
                    out.write(chunk)
                    # Let other tasks run between chunks of a possibly multi-GB copy.
                    await asyncio.sleep(0)

    def _download(self, token: str, entity_id: str, source: str, scratch: Path, hasher: StreamHasher) -> Path:
        # Imported here: synapseclient is slow to import and only sites with synapse: files need it.
        import synapseclient
        from synapseclient.core.exceptions import SynapseAuthenticationError, SynapseError

        syn = synapseclient.Synapse(
            repoEndpoint=self.repo_endpoint,
            authEndpoint=self.auth_endpoint,
            fileHandleEndpoint=self.file_handle_endpoint,
            portalEndpoint=self.portal_endpoint,
            # No version check or endpoint probing: the executor must not call out beyond the file.
            skip_checks=True,
            silent=True,
            cache_root_dir=str(scratch / "cache"),
            # A path that does not exist, so a ~/.synapseConfig cannot swap in other credentials,
            # cache locations or transfer settings behind the stored token's back.
            configPath=str(scratch / "synapseConfig"),
            # Not registered as the process-wide default client: concurrent downloads stay separate.
            cache_client=False,
        )
        try:
            syn.login(authToken=token, silent=True)
        except SynapseAuthenticationError as exc:
            raise SynapseLoginRequired(f"Synapse did not accept the stored token ({exc})") from exc
        except SynapseError as exc:
            raise DownloadFailed(source, f"could not log in to Synapse: {exc}") from exc
        try:
            # The size Synapse records, against the site's cap and the declared size, before a byte
            # is fetched (None for entities that are not files: refused below).
            hasher.expect(syn.get(entity_id, downloadFile=False).get("fileSize"))
            entity = syn.get(entity_id, downloadLocation=str(scratch / "download"))
        except SynapseAuthenticationError as exc:
            raise SynapseLoginRequired(f"Synapse did not accept the stored token ({exc})") from exc
        except SynapseError as exc:
            raise DownloadFailed(source, f"Synapse refused the download: {exc}") from exc
        path = getattr(entity, "path", None)
        if not path:
            raise DownloadFailed(source, f"{entity_id} is not a file entity, so there is nothing to download")
        return Path(path)
