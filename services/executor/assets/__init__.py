"""The site executor's hosted-file layer: download, verify, cache and unpack registered files.

Containers name their additional files as ``HostedFile(source, sha256)``; ``AssetCache`` turns
that into a verified local path (or unpacked directory). Each kind of address is a ``Source``;
adding one (say ``s3:``) is one subclass added to the list passed to ``AssetCache``.
"""

from services.executor.assets.archive import safe_extract
from services.executor.assets.base import ProgressCallback, Source, StreamHasher
from services.executor.assets.cache import AssetCache, default_sources
from services.executor.assets.credentials import SYNAPSE_CREDENTIALS_FILE, load_synapse_token, save_synapse_token
from services.executor.assets.direct import DirectSource
from services.executor.assets.errors import (
    ArchiveTooLarge,
    AssetError,
    DownloadFailed,
    DownloadTimedOut,
    DownloadTooLarge,
    DownloadTooShort,
    HashMismatch,
    InvalidArchive,
    NotADirectDownload,
    RefusedAsset,
    SynapseLoginRequired,
    UnknownSource,
    UnsafeArchive,
)
from services.executor.assets.synapse import SynapseSource

__all__ = [
    "SYNAPSE_CREDENTIALS_FILE",
    "ArchiveTooLarge",
    "AssetCache",
    "AssetError",
    "DirectSource",
    "DownloadFailed",
    "DownloadTimedOut",
    "DownloadTooLarge",
    "DownloadTooShort",
    "HashMismatch",
    "InvalidArchive",
    "NotADirectDownload",
    "ProgressCallback",
    "RefusedAsset",
    "Source",
    "StreamHasher",
    "SynapseLoginRequired",
    "SynapseSource",
    "UnknownSource",
    "UnsafeArchive",
    "default_sources",
    "load_synapse_token",
    "safe_extract",
    "save_synapse_token",
]
