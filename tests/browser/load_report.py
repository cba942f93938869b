"""The classroom load test's report: pure functions from its measurements to the
numbers and the markdown table (no browser, no server; unit-tested on their own)."""

from __future__ import annotations

import re
import statistics

from fa_explore.rules import RULES

# The number targets on 2 cores with N = 8: reported against, not asserted.
TARGETS = {"median Stop -> stopped (s)": 1.0, "max Train -> first points (s)": 10.0,
           "max kernel memory (MB)": 600.0}


def rules_for(n: int) -> list[str]:
    """A different rule per student (round the registry again past its size)."""
    names = list(RULES)
    return [names[i % len(names)] for i in range(n)]


def steps_of(progress: str) -> int | None:
    """The step count in the progress line ("step 1,234 / 90,000 · ...")."""
    match = re.search(r"step ([\d,]+) /", progress)
    return int(match.group(1).replace(",", "")) if match else None


def _fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    """The load test's result (as written to its JSON) as a markdown report."""
    s = result["summary"]
    lines = [f"# Classroom load test: N = {result['n']}, {result['seconds']:g} s of training",
             "",
             f"{result['cpus']} CPUs, preheated pool {result['pool']}, load average before "
             f"{result['load_before']}, during {result['load_during']}, after "
             f"{result['load_after']}; server process {_fmt(result['server_rss_mb'], 0)} MB.",
             "", "| page | rule | page ready s | Train -> first points s | Stop -> stopped s "
             f"| steps in {result['seconds']:g} s | kernel RSS MB | kernel USS MB | threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for p in result["pages"]:
        lines.append(
            f"| {p['index']} | {p['rule']} | {_fmt(p['page_ready_s'])} | "
            f"{_fmt(p['first_points_s'])} | {_fmt(p['stop_s'], 2)} | "
            f"{p['steps'] if p['steps'] is not None else '-'} | "
            f"{_fmt(p['rss_mb'], 0)} | {_fmt(p['uss_mb'], 0)} | {p['threads'] or '-'} |")
    lines += ["", "| measure | value | target (2 cores, N = 8) |", "|---|---|---|"]
    for name, value in s.items():
        target = TARGETS.get(name)
        lines.append(f"| {name} | {_fmt(value, 2)} | {'' if target is None else target} |")
    lines += ["", f"Kernels of the pages left {result['kernels_left_after_s']} s after the "
              f"pages closed: {len(result['kernels_left'])}; kernel processes then: "
              f"{result['kernel_processes_after']} (the pool's included)."]
    return "\n".join(lines) + "\n"


def summary(pages: list[dict]) -> dict:
    """Medians and extremes over the pages (None where no page has the number)."""
    def values(key):
        return [p[key] for p in pages if p[key] is not None]

    def med(key):
        v = values(key)
        return statistics.median(v) if v else None

    def top(key):
        v = values(key)
        return max(v) if v else None

    return {"median page ready (s)": med("page_ready_s"), "max page ready (s)": top("page_ready_s"),
            "median Train -> first points (s)": med("first_points_s"),
            "max Train -> first points (s)": top("first_points_s"),
            "median Stop -> stopped (s)": med("stop_s"), "max Stop -> stopped (s)": top("stop_s"),
            "median steps": med("steps"), "min steps": min(values("steps"), default=None),
            "median kernel memory (MB)": med("rss_mb"), "max kernel memory (MB)": top("rss_mb")}
