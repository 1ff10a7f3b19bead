"""People's terminals for tests that run documentation as written: an interactive bash on a real
terminal (a pty, so hidden prompts such as `medperf auth login`'s work as for a person), on a
network of its own (a network namespace with only loopback), so the fixed ports a README names
(`medperf serve` on 8080, a web server on 8000) are free whatever else runs on the machine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pexpect
from waiting import eventually

# Brings loopback up in the new namespace, says so, and holds the namespace until killed.
_HOLD = (
    "import fcntl, signal, socket, struct\n"
    "s = socket.socket()\n"
    "flags = struct.unpack('16sH22x', fcntl.ioctl(s, 0x8913, struct.pack('16sH22x', b'lo', 0)))[1]\n"
    "fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'lo', flags | 1))\n"
    "print('up', flush=True)\n"
    "signal.pause()\n"
)
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][A-Z0-9]|\r")


def plain(text: str) -> str:
    """What a person reads: colours, cursor moves and carriage returns removed."""
    return _ESCAPES.sub("", text)


class Network:
    """A network namespace with loopback only; ``enter`` is the argv prefix that runs a command in it."""

    def __init__(self) -> None:
        root = os.geteuid() == 0
        self.holder = subprocess.Popen(
            ["unshare", "-n" if root else "-rn", sys.executable, "-c", _HOLD],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        if self.holder.stdout.readline().strip() != "up":
            self.holder.wait()
            raise OSError(f"cannot make a network namespace: {self.holder.stderr.read().strip()}")  # type: ignore[union-attr]
        self.path = f"/proc/{self.holder.pid}/ns/net"
        self.inode = os.readlink(self.path)
        user = [] if root else ["-U", "--preserve-credentials"]
        self.enter = ["nsenter", "-t", str(self.holder.pid), *user, "-n", "--"]

    def close(self) -> None:
        """Stop every process still in the namespace (all of them this test's), then the holder."""
        for pid in _pids_in(self.inode):
            if pid != self.holder.pid:
                _signal(pid, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait()


def _pids_in(inode: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "net") == inode:
                    found.append(int(entry.name))
            except OSError:
                continue  # gone, or not ours to read
    return found


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


class Terminal:
    """One person's terminal: ``run`` sources a block in the shell, as typed, and returns what it printed.

    A reader thread drains the terminal all the time, so background processes (``medperf serve &``)
    never block on a full pty while the test works in another terminal."""

    def __init__(self, name: str, enter: list[str], env: dict[str, str], cwd: Path, scripts: Path) -> None:
        self.name, self.scripts, self.count = name, scripts, 0
        self.child = pexpect.spawn(
            enter[0],
            [*enter[1:], "bash", "--norc", "--noprofile", "-i"],
            env=env,
            cwd=str(cwd),
            encoding="utf-8",
            codec_errors="replace",
            dimensions=(50, 160),
        )
        self.output = ""
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # No echo of what is typed, no prompts; a failing command of a block says so (the ERR trap).
        self.child.sendline("stty -echo; PS1=''; PS2=''; trap 'echo \"__FAILED__ status $? at: $BASH_COMMAND\"' ERR")

    def _read(self) -> None:
        while True:
            try:
                chunk = self.child.read_nonblocking(65536, timeout=0.2)
            except pexpect.TIMEOUT:
                continue
            except (pexpect.EOF, OSError, ValueError):
                return
            with self._lock:
                self.output += chunk

    def since(self, start: int) -> str:
        with self._lock:
            return plain(self.output[start:])

    async def run(self, block: str, answer: Callable[[str], str | None], timeout: float = 900) -> str:
        """Source ``block`` in this shell and wait until it ends; ``answer`` replies to prompts it shows."""
        self.count += 1
        script = self.scripts / f"{self.name}-{self.count}.sh"
        script.write_text(block)
        with self._lock:
            start = len(self.output)
        done = f"__DONE_{self.name}_{self.count}__"
        # The marker is printed in two halves: typed text, were it echoed, could not end the wait.
        self.child.sendline(f"source {script}; printf '%s%s\\n' '{done[:6]}' '{done[6:]}'")
        answered: set[int] = set()

        async def ended() -> bool:
            text = self.since(start)
            for prompt in re.finditer(r"[^\n]*: $", text):
                reply = answer(prompt.group(0))
                if reply is not None and prompt.start() not in answered:
                    answered.add(prompt.start())
                    self.child.sendline(reply)
            return done in text

        await eventually(ended, f"{self.name}'s terminal to finish:\n{block}", timeout=timeout, interval=0.1)
        text = self.since(start).split(done, 1)[0]
        assert "__FAILED__" not in text, f"in {self.name}'s terminal, a command failed:\n{block}\n---\n{text}"
        return text

    async def shows(self, pattern: str, timeout: float = 120) -> re.Match[str]:
        """Wait until the terminal (a background process in it) printed ``pattern``."""
        found: list[re.Match[str]] = []

        async def printed() -> bool:
            match = re.search(pattern, self.since(0))
            if match:
                found.append(match)
            return bool(match)

        await eventually(printed, f"{pattern!r} in {self.name}'s terminal", timeout=timeout, interval=0.1)
        return found[0]

    async def close(self) -> None:
        """Stop this terminal's background jobs, as `kill %1` would, then the shell."""
        if self.child.isalive():
            self.child.sendline("jobs -p | xargs -r kill; wait; exit")
            for _ in range(300):
                if not self.child.isalive():
                    break
                await asyncio.sleep(0.1)
        self.child.close(force=True)
