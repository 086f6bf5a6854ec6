"""Run a command as a real process and measure it: wall clock, CPU, peak memory of its tree.

Peak RSS comes from two places. wait4() on the child returns its rusage, whose ru_maxrss is
the largest peak of the child and of every descendant it waited for (workers of a process
pool included): the tree's maximum, exact. To tell the command's own peak from its
workers', /proc/<pid>/status VmHWM (a high-water mark, so sampling cannot miss the peak
already reached) is read for every process in the tree every SAMPLE seconds; the last
sample before a process exits is its peak up to then.

The peak follows the largest message a run meets (its bytes and their parse are in memory
for a moment), and a larger input holds larger messages: so the command's VmRSS is sampled
too, and its median (`own_median_kib`) is its size while it works, which a leak would grow.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

SAMPLE = 0.05


@dataclass
class Run:
    argv: list[str]
    returncode: int = 0
    wall: float = 0.0
    cpu: float = 0.0  # user + system of the tree (waited-for descendants included)
    tree_peak_kib: int = 0  # ru_maxrss from wait4: the largest process of the tree
    own_peak_kib: int = 0  # the command's own VmHWM, last sample
    own_median_kib: int = 0  # the median of the command's own VmRSS samples
    own_cpu: float = 0.0  # user + system of the command's own process, last sample
    worker_peak_kib: int = 0  # the largest descendant's VmHWM, sampled (0: none seen)
    workers_seen: int = 0
    stdout: str = ""
    stderr: str = ""
    samples: list[int] = field(default_factory=list)  # the command's own VmRSS, KiB
    interrupted: bool = False  # sent SIGINT because `interrupt_when` said so

    def check(self) -> Run:
        if self.returncode != 0:
            tail = "\n".join(self.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"{' '.join(self.argv[:4])}... exit {self.returncode}:\n{tail}")
        return self


def _children(pid: int) -> list[int]:
    found = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def _memory_kib(pid: int) -> tuple[int, int]:
    """VmHWM and VmRSS of a process, KiB (0, 0 when it is gone)."""
    found = {"VmHWM:": 0, "VmRSS:": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmHWM:", "VmRSS:")):
                found[line.split()[0]] = int(line.split()[1])
    except OSError:
        pass
    return found["VmHWM:"], found["VmRSS:"]


def _cpu_seconds(pid: int) -> float:
    """User + system time of one process (not its children), from /proc; 0 when gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(
    argv: list[str],
    env: dict[str, str],
    cwd: Path | None = None,
    interrupt_when: Callable[[], bool] | None = None,
) -> Run:
    """Run `argv` to completion; stdout and stderr go to files (a 100,000-line log must not
    fill a pipe nobody reads while we sample). `interrupt_when`, asked at every sample:
    once it says so, the command gets SIGINT (Ctrl-C) and is left to finish."""
    result = Run(argv)
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-{os.getpid()}-out.txt"
    err_path = out_path.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err)
        peaks: dict[int, int] = {}
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                todo = [proc.pid]
                while todo:
                    pid = todo.pop()
                    hwm, rss = _memory_kib(pid)
                    if hwm:
                        peaks[pid] = max(peaks.get(pid, 0), hwm)
                    if rss and pid == proc.pid:
                        result.samples.append(rss)
                        result.own_cpu = _cpu_seconds(pid) or result.own_cpu
                    todo += _children(pid)
                if interrupt_when is not None and not result.interrupted and interrupt_when():
                    proc.send_signal(signal.SIGINT)
                    result.interrupted = True
                stop.wait(SAMPLE)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # wait4 rather than Popen.wait: it hands back the child's own rusage.
        _pid, status, usage = os.wait4(proc.pid, 0)
        result.wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    result.returncode = proc.returncode
    result.cpu = usage.ru_utime + usage.ru_stime
    result.tree_peak_kib = usage.ru_maxrss
    result.own_peak_kib = peaks.pop(proc.pid, 0)
    result.own_median_kib = int(statistics.median(result.samples)) if result.samples else 0
    result.worker_peak_kib = max(peaks.values(), default=0)
    result.workers_seen = len(peaks)
    result.stdout = out_path.read_text(errors="replace")
    result.stderr = err_path.read_text(errors="replace")
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return result


def mailsupport_env(cache_dir: Path, *, passed_through: bool = True) -> dict[str, str]:
    """The environment of a mailsupport process under measure: this one's without any
    MAILSUPPORT_* setting, running the checkout (its bytecode cached in `cache_dir`, so that
    no run pays for compiling); with `passed_through`, BENCH_MAILSUPPORT_* settings from the
    calling shell become MAILSUPPORT_* ones (a parse pool size, say)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILSUPPORT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if passed_through:
        env |= {
            k.removeprefix("BENCH_"): v
            for k, v in os.environ.items()
            if k.startswith("BENCH_MAILSUPPORT_")
        }
    root = Path(__file__).resolve().parent.parent
    return env | {"PYTHONPATH": str(root), "PYTHONPYCACHEPREFIX": str(cache_dir / "pycache")}
