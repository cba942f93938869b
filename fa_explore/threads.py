"""The thread policy: how many CPU threads torch uses for a run.

On a shared node (a JupyterHub or Binder machine with many students' kernels),
torch's default of one thread per core oversubscribes the cores, and a training
step waits for its slowest thread: measured on a 2-core machine at load 10-20, two
threads made steps 15-90 times slower than one. Alone on the machine, two threads
gain little on the small networks this package trains. So the ``threads`` setting's
default, ``None`` ("auto"), picks:

* one thread whenever the process has one CPU or less (a cgroup quota, an affinity
  mask), or the cores are shared: the machine's 1-minute load average is at least
  :data:`SHARED_LOAD` (other processes are computing; the average cannot tell them
  from this process's own previous run);
* otherwise one thread per CPU the process may use.

``FA_EXPLORE_THREADS`` (``auto`` or a positive integer) stands in for the setting
where the setting is ``None``: an administrator sets it for every kernel, a sweep
worker or a test run pins it. An explicit ``threads`` wins over both.

:func:`resolve_threads` decides, from :func:`cpu_info` (every input injectable for
tests); :func:`apply_threads` also sets torch's thread count, and only when it
changes. ``torch.set_num_threads`` is process-wide for torch's own pool but, with
OpenMP, may only set the calling thread's count: call it in the thread that computes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV = "FA_EXPLORE_THREADS"
# A 1-minute load average at or above this means someone else is computing.
SHARED_LOAD = 0.5
MAX_THREADS = 256


@dataclass(frozen=True)
class CpuInfo:
    """What the policy decides from: the CPUs this process may run on (its affinity
    mask), its cgroup CPU quota in CPUs (None: unlimited) and the machine's 1-minute
    load average (None where the OS has none)."""

    affinity: int
    quota: float | None
    load: float | None

    @property
    def cpus(self) -> float:
        """The CPUs this process can use at once: affinity, bounded by the quota."""
        return float(self.affinity) if self.quota is None else min(self.affinity, self.quota)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _cgroup_paths(self_cgroup: str) -> tuple[str | None, dict[str, str]]:
    """From ``/proc/self/cgroup``: the v2 path (``0::/path``) and the v1 paths by
    controller."""
    v2, v1 = None, {}
    for line in self_cgroup.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        for controller in controllers.split(","):
            if controller:
                v1[controller] = path
    return v2, v1


def _ancestors(root: Path, path: str) -> list[Path]:
    """``root/path`` and each folder above it up to ``root`` (a limit on a parent
    cgroup bounds its children too)."""
    parts = [p for p in path.strip("/").split("/") if p and p != ".."]
    return [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def _v2_quota(root: Path, path: str) -> float | None:
    quotas = []
    for folder in _ancestors(root, path):
        text = _read(folder / "cpu.max")
        if text is None:
            continue
        fields = text.split()
        if len(fields) >= 2 and fields[0] != "max":
            try:
                quota, period = float(fields[0]), float(fields[1])
            except ValueError:
                continue
            if quota > 0 and period > 0:
                quotas.append(quota / period)
    return min(quotas) if quotas else None


def _v1_quota(root: Path, path: str) -> float | None:
    quotas = []
    for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
        for folder in _ancestors(root / mount, path):
            quota_text = _read(folder / "cpu.cfs_quota_us")
            period_text = _read(folder / "cpu.cfs_period_us")
            if quota_text is None or period_text is None:
                continue
            try:
                quota, period = float(quota_text), float(period_text)
            except ValueError:
                continue
            if quota > 0 and period > 0:  # -1: no limit
                quotas.append(quota / period)
    return min(quotas) if quotas else None


def cgroup_quota(root: str | Path = "/sys/fs/cgroup",
                 self_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """The CPU quota of this process's cgroup in CPUs (``cpu.max`` for cgroup v2,
    ``cpu.cfs_quota_us / cpu.cfs_period_us`` for v1; the smallest along the path up
    to the root), or None when there is no limit or nothing can be read."""
    root = Path(root)
    text = _read(Path(self_cgroup)) or ""
    v2, v1 = _cgroup_paths(text)
    quota = _v2_quota(root, v2 if v2 is not None else "/")
    if quota is not None:
        return quota
    return _v1_quota(root, v1.get("cpu", v1.get("cpuacct", "/")))


def _affinity() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows has no load average
        return None


def cpu_info(*, root: str | Path = "/sys/fs/cgroup",
             self_cgroup: str | Path = "/proc/self/cgroup",
             affinity: Callable[[], int] = _affinity,
             load: Callable[[], float | None] = _load) -> CpuInfo:
    """The CPUs this process really has and the machine's load, read now."""
    return CpuInfo(affinity=max(1, int(affinity())), quota=cgroup_quota(root, self_cgroup),
                   load=load())


def _plural(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def _cores(cpus: float) -> str:
    text = f"{cpus:g}" if cpus == int(cpus) else f"{cpus:.2g}"
    return f"{text} core" + ("" if cpus == 1 else "s")


def _env_value(environ: Mapping[str, str]) -> int | None:
    """``FA_EXPLORE_THREADS`` as a count, None for unset or ``auto``."""
    raw = environ.get(ENV, "").strip()
    if raw.lower() in ("", "auto"):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"{ENV} must be auto or an integer in [1, {MAX_THREADS}]; "
                         f"got {raw[:40]!r}")
    return value


def auto_threads(info: CpuInfo) -> tuple[int, str]:
    """The automatic choice and its reason, e.g. ``(1, "auto: load 3.2 on 2 cores")``."""
    usable = max(1, math.floor(info.cpus))
    if info.quota is not None and info.quota < info.affinity:
        where = f"CPU quota {_cores(info.quota)} of {info.affinity}"
    else:
        where = _cores(info.affinity)
    if usable == 1:
        return 1, f"auto: {where}"
    if info.load is None:
        return usable, f"auto: {where}, no load average"
    reason = f"auto: load {info.load:.1f} on {where}"
    return (1 if info.load >= SHARED_LOAD else usable), reason


def resolve_threads(setting: int | None = None, *,
                    environ: Mapping[str, str] | None = None,
                    info: CpuInfo | Callable[[], CpuInfo] = cpu_info) -> tuple[int, str]:
    """How many threads a run uses and why: ``setting`` (``RunConfig.threads``) when
    given, else ``FA_EXPLORE_THREADS`` when it holds a number, else
    :func:`auto_threads`. ``info`` (or a callable making it) is read only for auto.
    A bad ``FA_EXPLORE_THREADS`` raises ``ValueError`` naming it."""
    if setting is not None:
        return int(setting), f"threads={int(setting)}"
    env = _env_value(os.environ if environ is None else environ)
    if env is not None:
        return env, f"{ENV}={env}"
    return auto_threads(info() if callable(info) else info)


def describe(threads: int, reason: str) -> str:
    """The choice for people, e.g. ``1 thread (auto: load 3.2 on 2 cores)``."""
    return f"{_plural(threads)} ({reason})"


def apply_threads(setting: int | None = None, **kwargs) -> tuple[int, str]:
    """:func:`resolve_threads`, then set torch's thread count to it (only when it
    differs: the call is process-wide and not free). Returns the choice."""
    import torch

    threads, reason = resolve_threads(setting, **kwargs)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads, reason


def pin_threads(threads: int) -> None:
    """Use ``threads`` torch threads in this process from now on, runs included:
    sets torch's count and ``FA_EXPLORE_THREADS`` (which the policy reads for every
    run whose ``threads`` is None). For benchmarks, tests and worker processes."""
    import torch

    if not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be an integer in [1, {MAX_THREADS}]; got {threads!r}")
    os.environ[ENV] = str(int(threads))
    if torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
