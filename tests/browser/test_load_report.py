"""The load test's report on made-up measurements (no browser, no server)."""

from load_report import TARGETS, markdown, rules_for, steps_of, summary

from fa_explore.rules import RULES


def page(index, ready, first, stop, steps, rss):
    return {"index": index, "rule": "fa", "kernel": f"k{index}", "page_ready_s": ready,
            "first_points_s": first, "stop_s": stop, "steps": steps, "rss_mb": rss,
            "uss_mb": None if rss is None else rss - 100, "threads": "1 thread (auto)",
            "page_errors": []}


def test_every_student_gets_a_different_rule_until_the_registry_is_used_up():
    names = rules_for(len(RULES) + 2)
    assert names[:len(RULES)] == list(RULES)
    assert names[len(RULES):] == list(RULES)[:2]


def test_steps_are_read_from_the_progress_line():
    assert steps_of("step 1,234 / 90,000 · 12 s · 1 min 03 s left · 1 thread (auto)") == 1234
    assert steps_of("starting…") is None


def test_summary_takes_medians_and_extremes_and_skips_missing_numbers():
    pages = [page(0, 2.0, 1.0, 0.5, 100, 500.0), page(1, 4.0, 3.0, None, 300, None),
             page(2, 9.0, 2.0, 1.5, 200, 550.0)]
    s = summary(pages)
    assert s["median page ready (s)"] == 4.0 and s["max page ready (s)"] == 9.0
    assert s["median Stop -> stopped (s)"] == 1.0 and s["max Stop -> stopped (s)"] == 1.5
    assert s["min steps"] == 100 and s["median steps"] == 200
    assert s["max kernel memory (MB)"] == 550.0


def test_markdown_has_a_row_per_page_and_the_targets():
    pages = [page(0, 2.0, 1.0, None, None, None), page(1, 4.0, 3.0, 0.8, 300, 590.0)]
    result = {"n": 2, "seconds": 20.0, "pool": 2, "cpus": 2, "load_before": "1 1 1",
              "load_during": "2 2 2", "load_after": "3 3 3", "server_rss_mb": 200.0,
              "pages": pages, "summary": summary(pages), "kernels_left": [],
              "kernels_left_after_s": 1.5, "kernel_processes_after": 2}
    text = markdown(result)
    assert "| 0 | fa | 2.0 | 1.0 | - | - | - | - | 1 thread (auto) |" in text
    assert "| 1 | fa | 4.0 | 3.0 | 0.80 | 300 | 590 | 490 | 1 thread (auto) |" in text
    for name, target in TARGETS.items():
        assert f"| {name} |" in text and f"| {target} |" in text
    assert "left 1.5 s after the pages closed: 0" in text
