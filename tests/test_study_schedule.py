"""The study's parallel lanes (bench/study_schedule.py): order, needs, deadlines."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from study_schedule import Job, run_jobs


def job(tmp: Path, name: str, code: str, needs: tuple[str, ...] = ()) -> Job:
    # each job appends "<name> start" and "<name> end" to one shared file
    trace = tmp / "trace.txt"
    script = (
        f"open({str(trace)!r}, 'a').write('{name} start\\n'); {code}; "
        f"open({str(trace)!r}, 'a').write('{name} end\\n')"
    )
    return Job(name, [sys.executable, "-c", script], tmp / f"{name}.log", needs)


def trace(tmp: Path) -> list[str]:
    return (tmp / "trace.txt").read_text().splitlines()


def test_a_job_starts_only_after_what_it_needs_and_others_overtake_it(tmp_path: Path) -> None:
    jobs = [
        job(tmp_path, "data", "import time; time.sleep(0.6)"),
        job(tmp_path, "run", "pass", needs=("data",)),
        job(tmp_path, "free", "pass"),
    ]
    outcomes = run_jobs(jobs, lanes=2, poll=0.05)
    assert [o.state for o in outcomes.values()] == ["done", "done", "done"]
    lines = trace(tmp_path)
    assert lines.index("free end") < lines.index("data end") < lines.index("run start")


def test_lanes_bound_the_jobs_running_at_once(tmp_path: Path) -> None:
    jobs = [job(tmp_path, f"j{i}", "import time; time.sleep(0.3)") for i in range(3)]
    run_jobs(jobs, lanes=1, poll=0.05)
    lines = trace(tmp_path)
    assert lines == [f"j{i} {e}" for i in range(3) for e in ("start", "end")]


def test_failures_skip_their_dependants_and_deadlines_stop_the_rest(tmp_path: Path) -> None:
    jobs = [
        job(tmp_path, "broken", "raise SystemExit(3)"),
        job(tmp_path, "after-broken", "pass", needs=("broken",)),
        job(tmp_path, "slow", "import time; time.sleep(30)"),
        job(tmp_path, "late", "pass", needs=("slow",)),
    ]
    start = time.monotonic()
    outcomes = run_jobs(jobs, lanes=2, start_until=0.5, stop_at=1.5, poll=0.05)
    assert time.monotonic() - start < 10
    assert outcomes["broken"].state == "failed" and outcomes["broken"].code == 3
    assert outcomes["after-broken"].state == "skipped"
    assert outcomes["slow"].state == "stopped" and outcomes["late"].state == "not started"
    assert "slow end" not in trace(tmp_path)


def test_unknown_needs_and_repeated_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown jobs: \\['nope'\\]"):
        run_jobs([job(tmp_path, "a", "pass", needs=("nope",))], lanes=1)
    with pytest.raises(ValueError, match="unique"):
        run_jobs([job(tmp_path, "a", "pass"), job(tmp_path, "a", "pass")], lanes=1)


def test_terminating_the_scheduler_stops_its_jobs(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    pid_file = tmp_path / "child.pid"
    child = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    bench = Path(__file__).resolve().parents[1] / "bench"
    scheduler = (
        f"import sys; sys.path.insert(0, {str(bench)!r}); from pathlib import Path; "
        "from study_schedule import Job, run_jobs; "
        f"run_jobs([Job('sleeper', [sys.executable, '-c', {child!r}], "
        f"Path({str(tmp_path / 'sleeper.log')!r}))], lanes=1, poll=0.05)"
    )
    parent = subprocess.Popen([sys.executable, "-c", scheduler])
    deadline = time.monotonic() + 30
    while not (pid_file.is_file() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
