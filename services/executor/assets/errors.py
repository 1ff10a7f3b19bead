"""Exceptions of the hosted-file layer.

Every message is written for the person running the site: it names the file involved and,
where there is one, the command or action that fixes the problem.
"""

from __future__ import annotations


class AssetError(Exception):
    """Base class: a hosted file could not be fetched, verified or unpacked."""


class RefusedAsset(AssetError):
    """The hosted file itself is refused (not its registered hash, a web page instead of the file,
    unsafe, unreadable, over a site limit): whoever registered it has to change it, and fetching
    the same file again cannot help, so the task that needed it fails for good, as their fault."""


class UnknownSource(AssetError):
    """No registered source understands the given address."""

    def __init__(self, source: str) -> None:
        super().__init__(
            f"don't know how to download {source!r}: expected an http(s):// direct-download URL "
            "(optionally prefixed 'direct:') or a Synapse ID such as 'synapse:syn12345'"
        )
        self.source = source


class DownloadFailed(AssetError):
    """The source could not deliver the file (HTTP error, network failure, remote refusal)."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"could not download {source}: {reason}")
        self.source = source
        self.reason = reason


class NotADirectDownload(DownloadFailed, RefusedAsset):
    """The URL serves a web page (a file viewer or login page), not the file's bytes."""

    def __init__(self, source: str) -> None:
        super().__init__(
            source,
            "the URL returns a web page, not the file. Register a direct-download link instead "
            "(the hosting provider's 'raw' or 'download' link, not the page that shows the file); "
            f"check it with `curl -I {source.removeprefix('direct:')}`: the Content-Type must not be "
            "text/html",
        )


class SynapseLoginRequired(AssetError):
    """No usable Synapse credentials are stored on this machine."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"{detail}; run `medperf auth synapse_login` to store a Synapse personal access token")


class HashMismatch(RefusedAsset):
    """The downloaded bytes do not have the registered sha256."""

    def __init__(self, source: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{source} does not match its registered hash: expected sha256 {expected}, "
            f"downloaded sha256 {actual}. The hosted file changed after registration or the "
            "registration names the wrong file; the download was discarded"
        )
        self.source = source
        self.expected = expected
        self.actual = actual


class DownloadTooLarge(DownloadFailed, RefusedAsset):
    """The file is larger than the site accepts, or than its registration declares."""

    def __init__(self, source: str, reason: str, setting: str) -> None:
        super().__init__(source, reason)
        self.setting = setting


class DownloadTooShort(DownloadFailed):
    """The transfer ended before the size the registration declares: a connection cut short is
    the network's passing trouble as often as a replaced file, so it is retried. (A complete
    transfer with another hash is the file's: ``HashMismatch``.)"""


class DownloadTimedOut(DownloadFailed):
    """The whole transfer took longer than the site allows (MEDPERF_SITE_DOWNLOAD_DEADLINE)."""


class InvalidArchive(RefusedAsset):
    """The file is not a tar archive this layer can read."""


class UnsafeArchive(InvalidArchive):
    """A tar member would write outside the extraction directory or create a special file."""

    def __init__(self, member: str, reason: str) -> None:
        super().__init__(f"refusing to extract archive member {member!r}: {reason}")
        self.member = member
        self.reason = reason


class ArchiveTooLarge(InvalidArchive):
    """Unpacking the archive would go over one of the site's extraction limits."""

    def __init__(self, archive: str, reason: str, setting: str, written: int) -> None:
        super().__init__(
            f"refusing to extract {archive}: {reason} (the site's limit; {setting} raises it); "
            f"stopped after writing {written} bytes"
        )
        self.setting = setting
        self.written = written
