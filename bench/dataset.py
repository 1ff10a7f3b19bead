"""Hashing a hospital-size prepared dataset, against raw baselines measured in the same run.

The synthetic dataset: ``--small-files`` small files (16 KiB each, like DICOM slices) and three
large files holding the rest of ``--gigabytes`` (like raw volumes), under ``--dir`` (kept and
reused by the next run with the same size; never inside the repository).

1. ``sha256sum`` on every core (``find | xargs -P nproc``): the parallel baseline; and the same
   with ``openssl dgst -sha256`` (coreutils' sha256sum may not use the CPU's SHA instructions,
   OpenSSL and so hashlib do: then openssl is the fair baseline).
2. One hashlib stream over every file: the single-core baseline.
3. The previous ``tree_hash`` (whole files in memory, one core) and ``hashing.tree_hash``, each in
   its own process: time and peak RSS growth.
4. The check before a job: ``manifest.verify`` of the unchanged dataset (metadata only), and
   with one small file and one large file changed.

Run: .venv/bin/python bench/dataset.py --dir /var/tmp/medperf-dataset [--gigabytes 20] [--cold]
Targets: full hash >= 90 % of sha256sum on every core; RSS growth < 64 MiB whatever the largest
file; unchanged 10,000-file check < 1 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from services.executor.manifest import build, verify

SMALL = 16 << 10
LARGE_FILES = 3

# Run in a fresh process: prints seconds and how far the peak RSS rose while hashing.
MEASURE = """
import hashlib, json, sys, time
from pathlib import Path
from services.executor.hashing import tree_hash

def old_tree_hash(*roots):
    digest = hashlib.sha256()
    for index, root in enumerate(roots):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(f"{index}:{path.relative_to(root).as_posix()}\\0".encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()

def kib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])

hasher = old_tree_hash if sys.argv[1] == "old" else tree_hash
before = kib("VmRSS")
Path("/proc/self/clear_refs").write_text("5")
start = time.perf_counter()
digest = hasher(*(Path(root) for root in sys.argv[2:]))
print(json.dumps({"seconds": time.perf_counter() - start, "grew_kib": kib("VmHWM") - before, "digest": digest}))
"""


def generate(base: Path, gigabytes: float, small_files: int) -> tuple[Path, Path]:
    data, labels = base / "data", base / "labels"
    spec = f"{gigabytes} GB, {small_files} small files\n"
    marker = base / "complete"
    if marker.exists() and marker.read_text() == spec:
        return data, labels
    print(f"generating {spec.strip()} under {base} ...", flush=True)
    subprocess.run(["rm", "-rf", str(data), str(labels), str(marker)], check=True)
    block = os.urandom(SMALL)
    for n in range(small_files):
        path = data / f"case-{n // 100:04d}" / f"slice-{n % 100:03d}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(n.to_bytes(8, "big") + block[8:])
    large = max(0, int(gigabytes * 1e9) - small_files * SMALL) // LARGE_FILES
    chunk = os.urandom(8 << 20)
    (data / "volumes").mkdir(parents=True, exist_ok=True)
    for n in range(LARGE_FILES):
        with (data / "volumes" / f"volume-{n}.raw").open("wb") as out:
            for offset in range(0, large, len(chunk)):
                out.write(n.to_bytes(8, "big") + chunk[8 : min(len(chunk), large - offset)])
    labels.mkdir(parents=True, exist_ok=True)
    (labels / "labels.csv").write_text("".join(f"{n},{n % 2}\n" for n in range(small_files)))
    marker.write_text(spec)
    return data, labels


def files_of(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*") if p.is_file())


def caches(cold: bool, roots: tuple[Path, ...]) -> None:
    """Cold: drop the page cache (root only). Warm: read every file once first."""
    if cold:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3")
        return
    for path in files_of(*roots):
        with path.open("rb", buffering=0) as file:
            while file.read(8 << 20):
                pass


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def stream(paths: list[Path]) -> None:
    digest, buffer = hashlib.sha256(), bytearray(1 << 20)
    for path in paths:
        with path.open("rb", buffering=0) as file:
            while count := file.readinto(buffer):
                digest.update(memoryview(buffer)[:count])


def in_process(kind: str, roots: tuple[Path, ...]) -> dict:
    repo = Path(__file__).resolve().parents[1]
    args = [sys.executable, "-c", MEASURE, kind, *map(str, roots)]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True, cwd=repo).stdout)


def flip(path: Path, offset: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True, help="where the synthetic dataset is (re)used")
    parser.add_argument("--gigabytes", type=float, default=2.0)
    parser.add_argument("--small-files", type=int, default=10_000)
    parser.add_argument("--cold", action="store_true", help="drop the page cache before each read (root)")
    args = parser.parse_args()
    roots = generate(args.dir.resolve(), args.gigabytes, args.small_files)
    paths = files_of(*roots)
    total = sum(p.stat().st_size for p in paths)
    largest = max(p.stat().st_size for p in paths)
    cpus = os.cpu_count() or 1
    load = os.getloadavg()[0]
    state = "cold (page cache dropped before each read)" if args.cold else "warm (every file read once first)"
    print(f"{len(paths)} files, {total / 1e9:.2f} GB, largest {largest / 2**20:.0f} MiB; {cpus} cores; load {load:.1f}")
    print(f"page cache: {state}\n")

    caches(args.cold, roots)
    command = f"find {' '.join(map(str, roots))} -type f -print0 | xargs -0 -P {cpus} -n 64 {{}} > /dev/null"
    parallel = timed(lambda: subprocess.run(command.format("sha256sum"), shell=True, check=True))
    caches(args.cold, roots)
    openssl = timed(lambda: subprocess.run(command.format("openssl dgst -sha256"), shell=True, check=True))
    caches(args.cold, roots)
    single = timed(lambda: stream(paths))
    caches(args.cold, roots)
    old = in_process("old", roots)
    caches(args.cold, roots)
    new = in_process("new", roots)
    assert new["digest"] == old["digest"], "the digest changed"

    manifest = build(*roots)
    checks = [timed(lambda: verify(manifest, *roots)) for _ in range(5)]
    unchanged = verify(manifest, *roots)
    small_file, large_file = paths[0], max(paths, key=lambda p: p.stat().st_size)
    found = {}
    for label, path in (("one small file", small_file), ("one large file", large_file)):
        flip(path, 0)
        start = time.perf_counter()
        result = verify(manifest, *roots)
        found[label] = (time.perf_counter() - start, result.changed, result.rehashed)
        flip(path, 0)  # restored: the next run reuses the dataset
    assert verify(manifest, *roots).digest == manifest.digest

    def row(what: str, seconds: float, ratio: str = "", note: str = "") -> None:
        print(f"| {what} | {seconds:.3f} s | {total / seconds / 1e6:,.0f} MB/s | {ratio} | {note} |")

    print("| measured | time | throughput | vs sha256sum on every core | note |")
    print("| --- | ---: | ---: | ---: | --- |")
    row(f"sha256sum, {cpus} processes", parallel, "1.00")
    row(f"openssl dgst, {cpus} processes", openssl, f"{parallel / openssl:.2f}", "parallel baseline with SHA-NI")
    row("hashlib, one stream", single, f"{parallel / single:.2f}", "single-core baseline")
    note = f"RSS +{old['grew_kib'] / 1024:.0f} MiB"
    row("previous tree_hash", old["seconds"], f"{parallel / old['seconds']:.2f}", note)
    ratio = parallel / new["seconds"]
    note = f"RSS +{new['grew_kib'] / 1024:.0f} MiB (target < 64)"
    note += f"; {openssl / new['seconds']:.2f} of openssl"
    row("hashing.tree_hash", new["seconds"], f"{ratio:.2f} (target >= 0.90)", note)
    print()
    print(
        f"check before a job, unchanged ({len(paths)} files): median {statistics.median(checks) * 1000:.0f} ms, "
        f"max {max(checks) * 1000:.0f} ms, {unchanged.rehashed} files read (target < 1 s)"
    )
    for label, (seconds, changed, rehashed) in found.items():
        read = f"{rehashed} file(s) read (a file restored < 2 s before counts as racy)"
        print(f"check before a job, {label} changed: {seconds * 1000:.0f} ms, {read}, found {changed}")


if __name__ == "__main__":
    main()
