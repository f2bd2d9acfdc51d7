"""The trial loop every scenario shares, and what a scenario reports.

`run_trials` repeats a scenario's disturbance on a fresh backlog; after each one
`finish_trial` checks the promise right away (nothing in neither store), then runs the
archiver once more, undisturbed, and checks that everything seeded is archived exactly once
and nothing of it is left in Redis. `Result` adds up a scenario's trials; check_retries,
check_unhealthy_run and count_kill are what several scenarios check of a disturbed run.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from harness.reliability.check import (
    Tally,
    archived_rows,
    compare,
    health,
    leftover_keys,
    retry_gaps,
    runs_left_running,
    still_in_redis,
)
from harness.reliability.processes import Run, Target, archive_once, expire_lock
from harness.reliability.seed import Backlog, seed_backlog

IN_PROGRESS = "Another archival run is in progress"

# What a scenario does to one trial's run: given the trial's number (from 0) and its seeded
# backlog, it disturbs the archiver and returns the trial's log line, or None if it logged its own.
Disturbance = Callable[[int, Backlog], str | None]


@dataclass
class Result:
    scenario: str
    trials: int = 0
    total: Tally = field(default_factory=Tally)
    midway_lost: int = 0  # messages in neither store right after the disturbance
    leftover_keys: int = 0
    facts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def count(self, key: str, n: int = 1) -> None:
        self.facts[key] = self.facts.get(key, 0) + n

    def problem(self, message: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(message)

    @property
    def ok(self) -> bool:
        return self.total.clean and not self.midway_lost and not self.leftover_keys and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "trials": self.trials, "messages_at_stake": self.total.messages,
            "lost": self.total.lost + self.midway_lost, "lost_after_clean_run": self.total.lost,
            "lost_midway": self.midway_lost, "duplicated": self.total.duplicated, "unexpected": self.total.unexpected,
            "misordered": self.total.misordered, "leftover_keys": self.leftover_keys, "ok": self.ok,
            "facts": self.facts, "problems": self.problems, "examples": self.total.examples,
        }


def finish_trial(result: Result, target: Target, backlog: Backlog, *, expect_healthy: bool = True) -> Run:
    """After the disturbance: the promise holds right now, then one clean run archives
    everything exactly once and leaves nothing of it in Redis."""
    client = target.client()
    midway = compare(backlog, archived_rows(target.db_url), in_redis=still_in_redis(client, backlog))
    result.midway_lost += midway.lost
    result.total.examples = (result.total.examples + [f"midway: {e}" for e in midway.examples if "neither" in e])[:10]
    if midway.duplicated or midway.unexpected:
        result.problem(f"right after the disturbance: {midway.duplicated} duplicated, {midway.unexpected} unexpected rows")
    left = expire_lock(client)
    if left is not None:
        result.count("locks_left_by_disturbed_runs")
    clean = archive_once(target)
    if expect_healthy and clean.returncode != 0:
        result.problem(f"the clean run exited {clean.returncode}: {clean.stderr.strip().splitlines()[-3:]}")
    if IN_PROGRESS in clean.stderr:
        result.problem("the clean run found the lock still held")
    tally = compare(backlog, archived_rows(target.db_url))
    result.total.add(tally)
    leftovers = leftover_keys(client, backlog)
    result.leftover_keys += len(leftovers)
    if leftovers:
        result.problem(f"{len(leftovers)} keys left in Redis, e.g. {leftovers[:3]}")
    if runs_left_running(target.db_url):
        result.problem("an archive_run row is still marked running after the clean run")
    result.trials += 1
    return clean


def run_trials(result: Result, target: Target, rng: random.Random, trials: int, conversations: int, disturb: Disturbance, *,
               real: int = 0, clean_run: bool = True, expect_healthy: bool = True, after: Callable[[], None] | None = None,
               log: Callable[[str], None] = print) -> Result:
    """`trials` times: empty both stores, seed `conversations` conversations (and `real` ones
    through the real savers), disturb, then finish_trial. A scenario whose disturbance checks
    the archive itself (clean_run=False) gets no clean run, only its trial counted; `after`
    runs at the end of each trial."""
    for trial in range(trials):
        target.reset()
        backlog = seed_backlog(target, rng, conversations, real)
        line = disturb(trial, backlog)
        if line is not None:
            log(f"  {result.scenario} trial {trial + 1}: {line}")
        if clean_run:
            finish_trial(result, target, backlog, expect_healthy=expect_healthy)
        else:
            result.trials += 1
        if after is not None:
            after()
    return result


def calibrate(target: Target, rng: random.Random, conversations: int, real: int) -> tuple[float, Run]:
    """How long an empty run takes (start-up) and one undisturbed run over such a backlog
    (also a check of the harness itself)."""
    target.reset()
    startup = archive_once(target).seconds
    backlog = seed_backlog(target, rng, conversations, real)
    run = archive_once(target)
    tally = compare(backlog, archived_rows(target.db_url))
    if run.returncode != 0 or not tally.clean:
        raise SystemExit(f"an undisturbed run is not clean: exit {run.returncode}, {tally.as_dict()}\n{run.stderr[-2000:]}")
    return startup, run


def count_kill(result: Result, target: Target, client: redis.Redis, backlog: Backlog) -> str:
    """Right after a kill: where in the run it landed, and that nothing is in neither store.
    Lets the lock the killed run held expire; returns what the log says of the kill."""
    result.count("kills")
    rows = archived_rows(target.db_url)
    present = still_in_redis(client, backlog)
    both = sum(1 for cid in present if len(rows.get(cid, [])) >= len(backlog.conversations[cid].messages))
    done = sum(1 for cid in backlog.conversations if cid not in present)
    phase = "before the first commit" if not rows else ("after the last delete" if not present else "mid-run")
    result.count(f"kills_{phase.replace(' ', '_')}")
    if both:
        result.count("kills_with_conversations_committed_but_not_deleted")
    midway = compare(backlog, rows, in_redis=present)
    result.midway_lost += midway.lost
    result.total.examples = (result.total.examples + midway.examples)[:10]
    expire_lock(client)
    return f"killed {phase} ({done} archived, {both} in both stores)"


def check_retries(result: Result, run: Run) -> int:
    """Count the run's retries and check them against ARCHIVER_RETRY_ATTEMPTS=2 and
    ARCHIVER_RETRY_DELAY_SECONDS=1: one retry per failed batch, a second after the failure.
    Returns the number of retries."""
    first, later, gaps = retry_gaps(run.stderr)
    result.count("retries", first)
    result.count("conversations_failed_after_retry", run.stderr.count("after retry, skipping"))
    if later:
        result.problem(f"{later} warnings of a third attempt: the retry setting says 2 attempts")
    if gaps and min(gaps) < 0.95:
        result.problem(f"a retry came {min(gaps)} s after the failure; 1 s was configured")
    result.facts.setdefault("retry_pause_s", []).extend(gaps[:5])
    return first


def check_unhealthy_run(result: Result, target: Target, run: Run, *, hit: bool) -> None:
    """A run that met an outage says so: exit 1, an unhealthy health file; and no traceback."""
    document = health(target)
    status = document and document.get("status")
    result.count(f"disturbed_runs_exit_{run.returncode}")
    if run.returncode not in (0, 1):
        result.problem(f"a disturbed run exited {run.returncode}: {run.stderr.strip().splitlines()[-3:]}")
    if run.returncode == 1 and status != "unhealthy":
        result.problem(f"exit 1 but the health file says {status!r}")
    if run.returncode == 0 and status != "healthy":
        result.problem(f"exit 0 but the health file says {status!r}")
    if hit and run.returncode == 0 and ("Failed to archive" in run.stderr or "Redis connection failed" in run.stderr):
        result.problem("a run that failed to archive something exited 0")
    if "Traceback" in run.stderr and "Archival run failed" not in run.stderr:
        result.problem("a disturbed run printed a traceback outside the run's error boundary")
