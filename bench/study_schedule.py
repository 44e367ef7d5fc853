"""Run a study's jobs in parallel lanes, in order, against a deadline (``bench/study.py
--jobs``).

Each job is a command run as its own process, with its output in a log file. A job starts
when a lane is free and the jobs it needs have finished; jobs start in the order given, a
later one only overtaking an earlier one that still waits for what it needs. No job starts
after ``start_until`` seconds, and a job still running at ``stop_at`` is stopped (its process
group is killed) and reported as such, so a time-boxed machine always ends with the table
of what finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Job:
    """One process: ``command`` (argv), its ``log`` file, the names of the jobs it needs."""

    name: str
    command: list[str]
    log: Path
    needs: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """How a job ended: ``done``, ``failed`` (exit status ``code``), ``stopped`` (at the
    deadline), ``not started`` (deadline), or ``skipped`` (a job it needs did not finish)."""

    name: str
    state: str
    seconds: float = 0.0
    code: int | None = None


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_jobs(
    jobs: Sequence[Job],
    lanes: int,
    start_until: float = float("inf"),
    stop_at: float = float("inf"),
    poll: float = 0.5,
) -> dict[str, Outcome]:
    """Run ``jobs`` in at most ``lanes`` processes at a time; each job's :class:`Outcome`.

    ``start_until`` and ``stop_at`` are seconds from the call. A job whose need failed, was
    stopped or never started is ``skipped``.
    """
    names = [job.name for job in jobs]
    if len(set(names)) != len(names):
        raise ValueError(f"job names must be unique: {names}")
    unknown = {n for job in jobs for n in job.needs} - set(names)
    if unknown:
        raise ValueError(f"jobs need unknown jobs: {sorted(unknown)}")
    start = time.monotonic()
    waiting = list(jobs)
    running: dict[str, tuple[subprocess.Popen, float, Job]] = {}
    outcomes: dict[str, Outcome] = {}
    # the jobs run in their own sessions: if this process is interrupted or terminated, they
    # are stopped with it rather than left running unseen
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _schedule(waiting, running, outcomes, lanes, start, start_until, stop_at, poll)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for process, _, _ in running.values():
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return {name: outcomes[name] for name in names}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _schedule(
    waiting: list[Job],
    running: dict[str, tuple[subprocess.Popen, float, Job]],
    outcomes: dict[str, Outcome],
    lanes: int,
    start: float,
    start_until: float,
    stop_at: float,
    poll: float,
) -> None:
    """The loop of :func:`run_jobs`: poll, stop, skip, start, until nothing waits or runs."""
    while waiting or running:
        now = time.monotonic() - start
        for name, (process, began, job) in list(running.items()):
            code = process.poll()
            if code is None and now >= stop_at:
                os.killpg(process.pid, signal.SIGKILL)
                code = process.wait()
                outcomes[name] = Outcome(name, "stopped", now - began, code)
            elif code is not None:
                state = "done" if code == 0 else "failed"
                outcomes[name] = Outcome(name, state, now - began, code)
            else:
                continue
            del running[name]
            log(f"{name}: {outcomes[name].state} after {now - began:.0f} s (log {job.log})")
        for job in list(waiting):
            if any(n in outcomes and outcomes[n].state != "done" for n in job.needs):
                outcomes[job.name] = Outcome(job.name, "skipped")
                waiting.remove(job)
        if now >= start_until or now >= stop_at:
            for job in waiting:
                outcomes[job.name] = Outcome(job.name, "not started")
            waiting.clear()
        for job in list(waiting):
            if len(running) >= lanes:
                break
            if all(n in outcomes and outcomes[n].state == "done" for n in job.needs):
                job.log.parent.mkdir(parents=True, exist_ok=True)
                with open(job.log, "w") as out:
                    process = subprocess.Popen(job.command, stdout=out, stderr=subprocess.STDOUT,
                                               env={**os.environ, **job.env},
                                               start_new_session=True)  # fmt: skip
                running[job.name] = (process, now, job)
                waiting.remove(job)
                log(f"{job.name}: started ({len(running)} running, {len(waiting)} waiting)")
        if waiting or running:
            time.sleep(poll)
