"""pytest plugin for CI (`-p e2e_strict`): a run in which any test was skipped fails.

The suites skip loudly when what they need is missing; in CI it must never be missing, so a skip
there means something did not run that should have."""

from __future__ import annotations

SKIPPED: list[str] = []


def pytest_runtest_logreport(report) -> None:
    if report.skipped:
        SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus) -> None:
    if SKIPPED and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if SKIPPED:
        terminalreporter.write_sep(
            "=", f"e2e_strict: {len(SKIPPED)} test(s) skipped, which fails this run", red=True, bold=True
        )
        for nodeid in SKIPPED[:20]:
            terminalreporter.write_line(f"  skipped: {nodeid}")
