"""A `lit` command as a bare subprocess: its wall and CPU time and the peak memory of its whole process tree.

The high-water RSS of its largest process comes from the kernel (wait4 through a small shim, so the
figure is not this process's), the proportional set size of the tree from /proc, sampled every
SAMPLE_S seconds; `serve_stage` does the same for `lit serve` answering a few requests.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import _common as common
from bench._scale_params import (
    REQUESTS,
    SAMPLE_S,
)

# ---------------------------------------------------------------------------------------------- measuring a process tree


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def tree(root: int) -> list[int]:
    """`root` and every process below it."""
    kids, out, todo = _children(), [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += kids.get(pid, [])
    return out


def memory(pid: int) -> tuple[int, int, int]:
    """(RSS, PSS, anonymous PSS) of a process in bytes (zeros when it is gone).

    Anonymous PSS (Pss_Anon + Pss_Shmem) leaves out file-backed pages (the libraries, mapped files):
    it is what the process's own data holds, and what grows with the data when anything does.
    """
    fields = {"Rss:": 0, "Pss:": 0, "Pss_Anon:": 0, "Pss_Shmem:": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            key = line.split(None, 1)[0] if line else ""
            if key in fields:
                fields[key] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return fields["Rss:"], fields["Pss:"], fields["Pss_Anon:"] + fields["Pss_Shmem:"]


@dataclass
class Stage:
    """What one stage cost: wall seconds and peak memory (bytes)."""

    name: str
    wall_s: float = 0.0
    cpu_s: float = 0.0  # user + system seconds of the stage's processes (those reaped: workers included)
    load: float = 0.0  # 1-minute load average when it started (2 cores)
    hwm_rss: int = 0  # kernel high-water RSS of the largest process of the tree (wait4; max over its reaped children)
    tree_pss: int = 0  # sampled peak of the tree's summed PSS
    tree_rss: int = 0  # sampled peak of the tree's summed RSS (counts shared pages once per process)
    tree_anon: int = 0  # sampled peak of the tree's summed anonymous PSS (its data, without file-backed pages)
    processes: int = 1  # most processes seen at once
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (seconds since start, tree PSS) of every sample
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        """What the stage needs: the larger of the largest process's high-water mark and the tree's sampled PSS."""
        return max(self.hwm_rss, self.tree_pss)


class Sampler(threading.Thread):
    """Polls a process tree's memory until stopped."""

    def __init__(self, pid: int, stage: Stage) -> None:
        super().__init__(daemon=True)
        self.pid, self.stage, self.done = pid, stage, threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            pids = tree(self.pid)
            mems = [memory(p) for p in pids]
            alive = [m for m in mems if m[0]]
            self.stage.tree_rss = max(self.stage.tree_rss, sum(m[0] for m in alive))
            self.stage.tree_pss = max(self.stage.tree_pss, sum(m[1] for m in alive))
            self.stage.tree_anon = max(self.stage.tree_anon, sum(m[2] for m in alive))
            self.stage.processes = max(self.stage.processes, len(alive))
            self.stage.timeline.append((time.monotonic() - start, sum(m[1] for m in alive)))
            self.done.wait(SAMPLE_S)


def bare_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(common.REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb", "COLUMNS": "200", "PYTHONPATH": path}


def _reap(proc: subprocess.Popen[bytes], sampler: Sampler, timeout: float) -> int:
    """Wait for `proc` (killing its group after `timeout` s), stop the sampler; returns the exit code."""
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    sampler.done.set()
    sampler.join()
    return code


# A small parent for each stage: a process forked from this one (torch loaded: ~1 GB) would carry this
# process's high-water RSS into its own rusage even after exec, so the stage is forked from a bare
# interpreter, which writes its child's ru_maxrss (KiB) and CPU seconds (the child's and those of the
# children it waited for: DataLoader and shard workers) to argv[1]. It ignores SIGTERM (the stage's
# group gets it) so that it outlives its child and reports; the child gets the default back.
SHIM = """import os, signal, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
open(sys.argv[1], "w").write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def _spawn(args: Sequence[str], out: Any, cwd: Path, maxrss: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-S", "-c", SHIM, str(maxrss), *common.LIT, *args], stdout=out,
                            stderr=subprocess.STDOUT, cwd=cwd, env=bare_env(), start_new_session=True)


def _hwm(stage: Stage, maxrss: Path) -> None:
    try:
        kib, cpu = maxrss.read_text().split()
        stage.hwm_rss, stage.cpu_s = int(kib) * 1024, float(cpu)
    except (OSError, ValueError):
        pass
    maxrss.unlink(missing_ok=True)


def run_stage(name: str, args: Sequence[str], log: Path, cwd: Path, timeout: float = 900) -> Stage:
    """`lit ARGS` as a subprocess (its own process group), measured; raises with the log's tail when it fails."""
    stage = Stage(name, load=os.getloadavg()[0])
    log.parent.mkdir(parents=True, exist_ok=True)
    maxrss = log.with_suffix(".maxrss")
    with log.open("w") as f:
        start = time.perf_counter()
        proc = _spawn(args, f, cwd, maxrss)
        sampler = Sampler(proc.pid, stage)
        sampler.start()
        code = _reap(proc, sampler, timeout)
        stage.wall_s = time.perf_counter() - start
    _hwm(stage, maxrss)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"lit {' '.join(map(str, args[:4]))} ... exited {code}:\n{tail}")
    return stage


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _post(port: int, data: bytes) -> tuple[float, dict[str, Any]]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        tick = time.perf_counter()
        conn.request("POST", "/predict", body=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        res = conn.getresponse()
        payload = res.read()
        took = time.perf_counter() - tick
        if res.status != 200:
            raise RuntimeError(f"POST /predict answered {res.status}: {payload[:300]!r}")
        return took, json.loads(payload)
    finally:
        conn.close()


def serve_stage(export: Path, photos: list[Path], log: Path, cwd: Path, requests: int = REQUESTS, timeout: float = 120) -> Stage:
    """`lit serve EXPORT`: seconds until /health answers, then `requests` POST /predict one at a time; then SIGTERM."""
    stage = Stage("serve", load=os.getloadavg()[0])
    port = _free_port()
    maxrss = log.with_suffix(".maxrss")
    with log.open("w") as f:
        start = time.perf_counter()
        proc = _spawn(["serve", str(export), "--port", str(port)], f, cwd, maxrss)
        sampler = Sampler(proc.pid, stage)
        sampler.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"lit serve exited {proc.returncode}:\n{log.read_text(errors='replace')[-2000:]}")
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                    conn.request("GET", "/health")
                    if conn.getresponse().status == 200:
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("lit serve did not answer /health in time") from None
                    time.sleep(0.1)
            ready = time.perf_counter() - start
            latencies, answered = [], 0
            for i in range(requests):
                took, answer = _post(port, photos[i % len(photos)].read_bytes())
                latencies.append(took)
                answered += bool(answer.get("guesses") or answer.get("species") or answer)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            _reap(proc, sampler, 30)
        stage.wall_s = time.perf_counter() - start
    _hwm(stage, maxrss)
    stage.extra = {"ready_s": ready, "requests": requests, "answered": answered,
                   "latency_p50_ms": statistics.median(latencies) * 1000, "latency_max_ms": max(latencies) * 1000}
    return stage
