"""Run a command as its own session and watch it: wall time, peak memory of every process in
the session (polled from ``/proc``), a time limit and a memory cap that kill the whole session,
and the processes still alive after the command's main process has gone.

Processes are found by session id, not by parentage, so pool workers are still seen (and
counted, and killed) after their parent died and they were re-parented.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1 << 20


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes whose session id is ``sid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(entry.path, "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def open_files(pids: list[int], limit: int = 12) -> list[str]:
    """Regular files the processes hold open (what they were reading when stopped)."""
    found: list[str] = []
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(fd.path)
                    skip = ("/dev/", "/proc/", "/sys/", "/usr/", "/lib")
                    if target.startswith("/") and not target.startswith(skip):
                        if ".venv" not in target and "site-packages" not in target:
                            found.append(target)
    return sorted(set(found))[:limit]


def rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    return 0


@dataclass
class Outcome:
    """What a watched command did."""

    cmd: list[str]
    rc: int | None
    seconds: float
    stdout: str
    stderr: str
    timed_out: bool = False
    over_memory: bool = False
    peak_tree_mb: float = 0.0
    peak_main_mb: float = 0.0
    peak_mb_by_pid: dict[int, float] = field(default_factory=dict)
    survivors: list[int] = field(default_factory=list)
    open_at_kill: list[str] = field(default_factory=list)

    @property
    def peak_worker_mb(self) -> float:
        """The largest peak of any process of the session other than the main one."""
        return max((v for k, v in self.peak_mb_by_pid.items() if k != -1), default=0.0)

    def describe(self) -> str:
        state = "hung" if self.timed_out else ("over memory" if self.over_memory else "done")
        return (
            f"{' '.join(self.cmd[3:4])}: {state}, rc={self.rc}, {self.seconds:.1f} s, peak "
            f"main {self.peak_main_mb:.0f} MB, worker {self.peak_worker_mb:.0f} MB, tree "
            f"{self.peak_tree_mb:.0f} MB, survivors {self.survivors}"
            + (f", files open when killed: {self.open_at_kill}" if self.open_at_kill else "")
        )


class Watched:
    """A command started in its own session with a watchdog thread."""

    def __init__(
        self,
        cmd: list[str],
        timeout_s: float,
        cap_mb: float,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        poll_s: float = 0.05,
    ) -> None:
        self.cmd, self.timeout_s, self.cap_mb, self.poll_s = cmd, timeout_s, cap_mb, poll_s
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.start = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self._out, stderr=self._err, start_new_session=True
        )
        self.sid = self.proc.pid
        self.timed_out = self.over_memory = False
        self.peak_tree = self.peak_main = 0
        self.peaks: dict[int, int] = {}
        self.open_at_kill: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            pids = session_pids(self.sid)
            sizes = {pid: rss_bytes(pid) for pid in pids}
            total = sum(sizes.values())
            self.peak_tree = max(self.peak_tree, total)
            for pid, size in sizes.items():
                self.peaks[pid] = max(self.peaks.get(pid, 0), size)
            self.peak_main = max(self.peak_main, sizes.get(self.sid, 0))
            if total > self.cap_mb * MB:
                self.over_memory = True
                self.open_at_kill = open_files(pids)
                self.kill_all()
            elif time.monotonic() - self.start > self.timeout_s:
                self.timed_out = True
                self.open_at_kill = open_files(pids)
                self.kill_all()
            if not pids:
                return
            self._stop.wait(self.poll_s)

    def kill_main(self) -> None:
        """``kill -9`` the main process only (its workers are left to the code under test)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGKILL)

    def kill_all(self) -> None:
        """``kill -9`` every process of the session, one by one."""
        for pid in session_pids(self.sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait(self, grace_s: float = 5.0) -> Outcome:
        """Wait for the main process, then up to ``grace_s`` for the rest of the session to
        go; whatever is still alive then is recorded as a survivor and killed."""
        rc = self.proc.wait()
        seconds = time.monotonic() - self.start
        deadline = time.monotonic() + grace_s
        survivors = session_pids(self.sid)
        while survivors and time.monotonic() < deadline:
            time.sleep(0.1)
            survivors = session_pids(self.sid)
        self.kill_all()
        self._stop.set()
        self._thread.join(timeout=5)
        out = self._read(self._out)
        err = self._read(self._err)
        by_pid = {(-1 if p == self.sid else p): v / MB for p, v in self.peaks.items()}
        return Outcome(
            cmd=self.cmd,
            rc=rc,
            seconds=seconds,
            stdout=out,
            stderr=err,
            timed_out=self.timed_out,
            over_memory=self.over_memory,
            peak_tree_mb=self.peak_tree / MB,
            peak_main_mb=self.peak_main / MB,
            peak_mb_by_pid=by_pid,
            survivors=survivors,
            open_at_kill=self.open_at_kill,
        )

    @staticmethod
    def _read(fh) -> str:
        fh.seek(0)
        text = fh.read().decode("utf-8", "replace")
        fh.close()
        return text


def run_watched(
    cmd: list[str],
    timeout_s: float,
    cap_mb: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    grace_s: float = 5.0,
) -> Outcome:
    """Run ``cmd`` to the end (or until the watchdog kills it) and say how it went."""
    watched = Watched(cmd, timeout_s, cap_mb, env=env, cwd=cwd)
    try:
        return watched.wait(grace_s)
    except BaseException:  # interrupted: leave nothing running
        watched.kill_all()
        raise
