"""The thread policy: cgroup quotas, affinity and load are injected (fake cgroup
folders, callables); nothing is timed."""

from pathlib import Path

import pytest
import torch

from fa_explore import RunConfig, train_iter
from fa_explore.threads import (
    ENV,
    CpuInfo,
    apply_threads,
    auto_threads,
    cgroup_quota,
    cpu_info,
    describe,
    resolve_threads,
)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def v2(tmp_path):
    """A cgroup v2 tree whose process sits in /user.slice/kernel.scope."""
    self_cgroup = tmp_path / "self_cgroup"
    write(self_cgroup, "0::/user.slice/kernel.scope\n")
    return tmp_path / "cgroup", self_cgroup


def test_v2_quota_is_read_and_the_smallest_along_the_path_wins(v2):
    root, self_cgroup = v2
    write(root / "user.slice" / "kernel.scope" / "cpu.max", "max 100000\n")
    write(root / "user.slice" / "cpu.max", "150000 100000\n")
    write(root / "cpu.max", "400000 100000\n")
    assert cgroup_quota(root, self_cgroup) == pytest.approx(1.5)


def test_v2_without_a_limit_is_none(v2):
    root, self_cgroup = v2
    write(root / "user.slice" / "kernel.scope" / "cpu.max", "max 100000\n")
    assert cgroup_quota(root, self_cgroup) is None


def test_v2_in_a_container_reads_the_namespace_root(tmp_path):
    self_cgroup = tmp_path / "self_cgroup"
    write(self_cgroup, "0::/\n")
    write(tmp_path / "cgroup" / "cpu.max", "200000 100000\n")
    assert cgroup_quota(tmp_path / "cgroup", self_cgroup) == pytest.approx(2.0)


def test_v1_cfs_quota_and_period(tmp_path):
    self_cgroup = tmp_path / "self_cgroup"
    write(self_cgroup, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n")
    folder = tmp_path / "cgroup" / "cpu,cpuacct" / "docker" / "abc"
    write(folder / "cpu.cfs_quota_us", "50000\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(tmp_path / "cgroup", self_cgroup) == pytest.approx(0.5)


def test_v1_unlimited_and_unreadable_are_none(tmp_path):
    self_cgroup = tmp_path / "self_cgroup"
    write(self_cgroup, "5:cpu,cpuacct:/\n")
    folder = tmp_path / "cgroup" / "cpu,cpuacct"
    write(folder / "cpu.cfs_quota_us", "-1\n")
    write(folder / "cpu.cfs_period_us", "100000\n")
    assert cgroup_quota(tmp_path / "cgroup", self_cgroup) is None
    assert cgroup_quota(tmp_path / "nothing", tmp_path / "no_file") is None


def test_cpu_info_combines_affinity_quota_and_load(v2):
    root, self_cgroup = v2
    write(root / "cpu.max", "150000 100000\n")
    info = cpu_info(root=root, self_cgroup=self_cgroup, affinity=lambda: 4, load=lambda: 3.2)
    assert info == CpuInfo(affinity=4, quota=1.5, load=3.2)
    assert info.cpus == 1.5


@pytest.mark.parametrize(("info", "threads", "reason"), [
    (CpuInfo(2, None, 0.1), 2, "auto: load 0.1 on 2 cores"),
    (CpuInfo(2, None, 3.2), 1, "auto: load 3.2 on 2 cores"),
    (CpuInfo(8, None, 0.5), 1, "auto: load 0.5 on 8 cores"),
    (CpuInfo(1, None, 0.0), 1, "auto: 1 core"),
    (CpuInfo(8, 1.5, 0.0), 1, "auto: CPU quota 1.5 cores of 8"),
    (CpuInfo(8, 4.0, 0.2), 4, "auto: load 0.2 on CPU quota 4 cores of 8"),
    (CpuInfo(4, None, None), 4, "auto: 4 cores, no load average"),
])
def test_auto_uses_one_thread_when_cores_are_shared(info, threads, reason):
    assert auto_threads(info) == (threads, reason)


def test_the_setting_wins_then_the_variable_then_auto():
    busy = CpuInfo(2, None, 9.0)

    def never():
        raise AssertionError("the CPUs are read only for auto")

    assert resolve_threads(3, environ={ENV: "1"}, info=never) == (3, "threads=3")
    assert resolve_threads(None, environ={ENV: "2"}, info=never) == (2, f"{ENV}=2")
    assert resolve_threads(None, environ={ENV: "auto"}, info=busy) == (
        1, "auto: load 9.0 on 2 cores")
    assert resolve_threads(None, environ={}, info=lambda: busy)[0] == 1


@pytest.mark.parametrize("raw", ["0", "-1", "two", "1.5", "100000"])
def test_a_bad_variable_names_itself_and_what_is_allowed(raw):
    with pytest.raises(ValueError, match=rf"{ENV} must be auto or an integer in \[1, 256\]"):
        resolve_threads(None, environ={ENV: raw}, info=CpuInfo(2, None, 0.0))


def test_the_setting_is_validated_like_every_other():
    with pytest.raises(ValueError, match=r"RunConfig.threads must be None .* or an integer"):
        RunConfig(threads=0)
    assert RunConfig.from_query("threads=2").threads == 2
    assert RunConfig().threads is None


def test_describe():
    assert describe(1, "auto: load 3.2 on 2 cores") == "1 thread (auto: load 3.2 on 2 cores)"
    assert describe(2, "threads=2") == "2 threads (threads=2)"


def test_apply_sets_torch_only_when_the_count_changes(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    assert apply_threads(1, environ={}) == (1, "threads=1")
    assert calls == []
    assert apply_threads(2, environ={}) == (2, "threads=2")
    assert calls == [2]


def test_train_iter_applies_the_policy_at_the_start_and_records_it(monkeypatch):
    calls = []
    current = torch.get_num_threads()
    monkeypatch.setattr(torch, "get_num_threads", lambda: current)
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    monkeypatch.setenv(ENV, "3")
    cfg = RunConfig(hidden=(8,), epochs=1, train_size=64, eval_size=32, device="cpu")
    snapshots = train_iter(cfg)
    first = next(snapshots)
    snapshots.close()
    assert first.run.threads == (3, f"{ENV}=3")
    assert calls == ([] if current == 3 else [3])
