"""The nine ways the trials try to break the archiver's promise.

Each scenario is a disturbance: what goes wrong while the real archiver, its own process,
works through a backlog whose messages are known. The shared trial runner
(trials.run_trials) seeds the backlog before it and checks the promise after it, at once
and again after one clean run. Each scenario returns a `Result` with what it counted.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis

from harness import lgwriter
from harness.reliability.check import archived_rows, compare, leftover_keys, seconds_per_key, still_in_redis
from harness.reliability.processes import (
    DB_NAME,
    PG_CLUSTER_PORT,
    Archiver,
    Target,
    archive_once,
    held_rows,
    kill_at_random_progress,
    kill_between_commit_and_delete,
    kill_redis_clients,
    migrate,
    pg_cluster,
    repeatedly,
    terminate_backends,
    wait_for_lock_wait,
    wait_for_pg,
    wait_for_rows,
)
from harness.reliability.seed import Backlog, Bot, Msg, Seeded, hostile_values, lc_message
from harness.reliability.trials import (
    IN_PROGRESS,
    Result,
    calibrate,
    check_retries,
    check_unhealthy_run,
    count_kill,
    run_trials,
)
from harness.servers import start_redis


def scenario_sigkill(target: Target, rng: random.Random, trials: int, conversations: int, real: int = 8,
                     log: Callable[[str], None] = print) -> Result:
    """SIGKILL at random moments, one to three times per trial, then one clean run."""
    result = Result("sigkill")
    startup, undisturbed = calibrate(target, rng, conversations, real)
    per_key = seconds_per_key(undisturbed)
    result.facts.update(start_up_s=round(startup, 2), undisturbed_run_s=round(undisturbed.seconds, 2))

    def disturb(trial: int, backlog: Backlog) -> None:
        batch = rng.choice([25, 50, 200])
        client = target.client()
        for kill in range(rng.randint(1, 3)):
            left = len(still_in_redis(client, backlog))
            archiver = Archiver(target, "--batch-size", str(batch))
            if kill == 0 and trial % 2 == 0:
                killed = kill_between_commit_and_delete(target, archiver, client)
            else:
                killed = kill_at_random_progress(archiver, rng, batches=-(-left // batch), batch_s=per_key * batch)
            if killed:
                archiver.result(killed=True)
                log(f"  sigkill trial {trial + 1}: {count_kill(result, target, client, backlog)}")
            else:
                run = archiver.result()
                result.count("runs_finished_before_the_kill")
                if run.returncode != 0:
                    result.problem(f"an undisturbed run exited {run.returncode}")

    return run_trials(result, target, rng, trials, conversations, disturb, real=real, log=log)


def scenario_pg_terminate(target: Target, rng: random.Random, trials: int, conversations: int, admin_url: str,
                          database: str, every: tuple[float, float] = (0.05, 0.6),
                          log: Callable[[str], None] = print) -> Result:
    """The archiver's PostgreSQL connections are terminated every `every` seconds (0.05-0.6 s) during a run."""
    result = Result("pg-terminate")

    def disturb(trial: int, backlog: Backlog) -> str:
        archiver = Archiver(target, "--batch-size", str(rng.choice([10, 25, 50])))
        wait_for_rows(target, archiver)
        # At once: the run has committed its first rows, and a fast one may be done in less
        # than the first pause.
        with repeatedly(lambda: terminate_backends(admin_url, database), *every, rng, at_once=True) as done:
            run = archiver.wait()
        result.count("connections_terminated", done["count"])
        result.count("trials_disturbed_mid_run", int(done["count"] > 0))
        first = check_retries(result, run)
        check_unhealthy_run(result, target, run, hit=done["count"] > 0)
        return f"{done['count']} connections terminated, {first} retries, exit {run.returncode}"

    run_trials(result, target, rng, trials, conversations, disturb, log=log)
    result.facts["retry_pause_s"] = sorted(result.facts.get("retry_pause_s", []))[:10]
    return result


def scenario_pg_restart(redis_url: str, health_file: Path, rng: random.Random, trials: int, conversations: int,
                        log: Callable[[str], None] = print) -> Result:
    """A real PostgreSQL server (a throwaway cluster) stops mid-run (-m immediate: as in a
    crash) and starts again 1-4 s later."""
    result = Result("pg-restart")
    if shutil.which("pg_createcluster") is None:
        result.facts["not_run"] = "pg_createcluster is not installed"
        return result
    created = pg_cluster("create")
    if created.returncode != 0 and "already exists" not in created.stderr:
        result.facts["not_run"] = f"pg_createcluster failed: {created.stderr.strip()[:300]}"
        return result
    try:
        pg_cluster("start")
        admin = f"postgresql://postgres@127.0.0.1:{PG_CLUSTER_PORT}/postgres"
        wait_for_pg(admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}"')
            conn.execute(f'CREATE DATABASE "{DB_NAME}"')
        db_url = f"postgresql://postgres@127.0.0.1:{PG_CLUSTER_PORT}/{DB_NAME}"
        migrate(db_url)
        target = Target(db_url, redis_url, health_file)

        def disturb(trial: int, backlog: Backlog) -> str:
            archiver = Archiver(target, "--batch-size", str(rng.choice([10, 25, 50])))
            wait_for_rows(target, archiver)
            time.sleep(rng.uniform(0, 0.2))  # the stop itself takes a few tenths of a second
            stopped = pg_cluster("stop").returncode == 0 and archiver.running()
            down = rng.uniform(1, 4)
            time.sleep(down)
            pg_cluster("start")
            run = archiver.wait()
            wait_for_pg(db_url)
            # Met the stop: a database error in the run's own log. A process still running when
            # the server stopped may have been past its last database write (exiting).
            met = stopped and ("Database error" in run.stderr or "Cannot record the run" in run.stderr)
            result.count("server_stops_mid_run", int(stopped))
            result.count("runs_that_met_the_stop", int(met))
            first = check_retries(result, run)
            check_unhealthy_run(result, target, run, hit=met)  # a run that failed to archive exits 1
            if run.returncode == 0 and (left := still_in_redis(target.client(), backlog)):
                result.problem(f"the run exited 0 but left {len(left)} conversations in Redis")
            return f"down {down:.1f} s, {first} retries, exit {run.returncode}"

        run_trials(result, target, rng, trials, conversations, disturb, log=log)
        result.facts["retry_pause_s"] = sorted(result.facts.get("retry_pause_s", []))[:10]
    finally:
        pg_cluster("drop")
    return result


def scenario_redis_kill(target: Target, rng: random.Random, trials: int, conversations: int,
                        every: tuple[float, float] = (0.02, 0.4), log: Callable[[str], None] = print) -> Result:
    """Redis drops every client connection, again and again, while a run is certainly under
    way: the run is held at its first insert (held_rows), Redis writes are paused (reads go on),
    then the run is let go, so that its deletes wait on Redis while the connections are killed
    every `every` seconds (0.02-0.4 s); writes resume when the run has ended."""
    result = Result("redis-kill")

    def disturb(trial: int, backlog: Backlog) -> str:
        client = target.client()
        with held_rows(target.db_url, backlog) as gate:
            archiver = Archiver(target, "--batch-size", str(rng.choice([10, 25, 50])))
            held = wait_for_lock_wait(target.db_url, archiver)
            client.execute_command("CLIENT", "PAUSE", 120_000, "WRITE")
            gate.rollback()
        try:
            with repeatedly(lambda: kill_redis_clients(target.redis_url), *every, rng, at_once=True) as done:
                run = archiver.wait()
        finally:
            client.execute_command("CLIENT", "UNPAUSE")
        if not held:
            result.problem("the run was not held at its first insert: it ended first")
        result.count("connections_killed", done["count"])
        result.count("trials_disturbed_mid_run", int(held and done["count"] > 0))
        check_unhealthy_run(result, target, run, hit=done["count"] > 0)
        if run.returncode == 1 and "Redis connection failed" not in run.stderr:
            result.problem("an unhealthy run after Redis dropped it does not say so")
        return f"{done['count']} connections killed, exit {run.returncode}"

    return run_trials(result, target, rng, trials, conversations, disturb, log=log)


def scenario_redis_restart(target: Target, port: int, rng: random.Random, trials: int, conversations: int,
                           log: Callable[[str], None] = print) -> Result:
    """The Redis server shuts down mid-run (SHUTDOWN SAVE: its data survives, as with
    persistence on) and starts again 1-3 s later."""
    result = Result("redis-restart")

    def disturb(trial: int, backlog: Backlog) -> str:
        archiver = Archiver(target, "--batch-size", str(rng.choice([25, 50])))
        wait_for_rows(target, archiver)
        time.sleep(rng.uniform(0, 0.5))
        shutdown = archiver.running()
        try:
            target.client().execute_command("SHUTDOWN", "SAVE")
        except redis.ConnectionError:
            pass  # the server closes the connection as it goes
        time.sleep(rng.uniform(1, 3))
        start_redis(port)
        run = archiver.wait()
        result.count("server_stops_mid_run", int(shutdown))
        check_unhealthy_run(result, target, run, hit=shutdown)
        if shutdown and run.returncode == 0:
            # A run with no command in flight while Redis was down meets no error: redis-py
            # makes a new connection when an idle one is next used. Every command the archiver
            # sends can be repeated anyway (reads, and a compare-and-delete that answers -1 the
            # second time); check_unhealthy_run has checked that such a run is consistent.
            result.count("runs_that_rode_through_the_restart")
        return f"exit {run.returncode}"

    return run_trials(result, target, rng, trials, conversations, disturb, log=log)


def scenario_writer(target: Target, rng: random.Random, trials: int, threads: int, seconds: float,
                    log: Callable[[str], None] = print) -> Result:
    """The bot keeps writing (real savers, every kind) while the archiver runs again and
    again with a cutoff of 0.36 s, so threads are archived between and during turns. When the
    writers stop, one more run; the archive must equal everything the writers were told the
    conversation holds (LangGraph's get_state after each turn), and Redis must be empty.
    Nothing is seeded beforehand: the writers' conversations are the backlog."""
    result = Result("writer")

    def disturb(trial: int, _: Backlog) -> str:
        names = [f"live:{lgwriter.SAVERS[i % 4]}:{trial}:{i}" for i in range(threads)]
        bot = Bot(target.redis_url, names)
        writers = [threading.Thread(target=bot.write, args=(names[i::2], rng.getrandbits(32))) for i in range(2)]
        for w in writers:
            w.start()
        deadline = time.monotonic() + seconds
        runs = []
        while time.monotonic() < deadline:
            runs.append(archive_once(target, "--cutoff-hours", "0.0001", "--batch-size", "4"))
        bot.stop.set()
        for w in writers:
            w.join()
        final_states = {name: lgwriter.conversation_state(target.redis_url, name, saver=name.split(":")[1])["messages"] for name in names}
        time.sleep(0.5)  # every thread past the 0.36 s cutoff
        archive_once(target, "--cutoff-hours", "0.0001")
        backlog = Backlog({name: Seeded(name, "writer", "", msgs) for name, msgs in bot.expected.items()})
        rows = archived_rows(target.db_url)
        tally = compare(backlog, rows)
        result.total.add(tally)
        for name, state in final_states.items():
            got = [m.identity() for m in rows.get(name, [])]
            tail = [Msg(m["id"], m["type"], m["content"]).identity() for m in state]
            if tail and got[-len(tail):] != tail:
                result.problem(f"{name}: the archive does not end with LangGraph's final get_state")
        left = sorted(k.decode("utf-8", "replace") for k in target.client().scan_iter(count=1000))
        result.leftover_keys += len(left)
        if left:
            result.problem(f"{len(left)} keys left after the final run, e.g. {left[:3]}")
        for error in bot.errors[:5]:
            result.problem(f"writer error: {error[:300]}")
        deferred = sum(int(m.group(1)) for r in runs for m in re.finditer(r"; (\d+) deferred", r.summary))
        archived = sum(int(m.group(1)) for r in runs for m in re.finditer(r"^Archived (\d+) conversations", r.summary))
        result.count("turns_written", sum(bot.turns.values()))
        result.count("archiver_runs", len(runs))
        result.count("archived_during_writes", archived)
        result.count("deferred_because_written_meanwhile", deferred)
        result.count("unhealthy_runs", sum(1 for r in runs if r.returncode != 0))
        return f"{sum(bot.turns.values())} turns, {len(runs)} runs, {archived} archived, {deferred} deferred, {len(bot.errors)} writer errors"

    return run_trials(result, target, rng, trials, 0, disturb, clean_run=False, log=log)


def scenario_concurrent(target: Target, rng: random.Random, trials: int, conversations: int,
                        log: Callable[[str], None] = print) -> Result:
    """Two, then three archivers started at the same moment."""
    result = Result("concurrent")

    def disturb(trial: int, backlog: Backlog) -> str:
        n = 2 + trial % 2
        archivers = [Archiver(target, "--batch-size", "50") for _ in range(n)]
        runs = [a.wait() for a in archivers]
        workers = [r for r in runs if r.summary.startswith("Archived ")]
        waiting = [r for r in runs if IN_PROGRESS in r.stderr]
        result.count(f"trials_with_{n}_archivers")
        if len(workers) != 1 or len(waiting) != n - 1:
            result.problem(f"{n} archivers: {len(workers)} worked, {len(waiting)} said another run is in progress")
        if any(r.returncode != 0 for r in runs):
            result.problem(f"exit codes {[r.returncode for r in runs]}")
        with psycopg.connect(target.db_url) as conn:
            recorded = conn.execute("SELECT COUNT(*) FROM archive_run").fetchone()[0]
        if recorded != 1:
            result.problem(f"{recorded} archive_run rows for one working run")
        return f"{n} archivers, exits {[r.returncode for r in runs]}"

    return run_trials(result, target, rng, trials, conversations, disturb, log=log)


def scenario_hostile(target: Target, rng: random.Random, trials: int, conversations: int, marker_dir: Path,
                     log: Callable[[str], None] = print) -> Result:
    """A backlog with the hostile values mixed in (and a healthy 10 MB message): the healthy
    conversations are archived exactly once, every hostile value is quarantined once and
    kept in Redis, nothing it names is run."""
    result = Result("hostile")
    disturbed = {"quarantined": 0}  # what the disturbed run quarantined, for after the clean run

    def disturb(trial: int, backlog: Backlog) -> str:
        marker = marker_dir / f"pwned-{trial}"
        client = target.client()
        for name, value in hostile_values(marker):
            key = f"langgraph:checkpoint:hostile-{name}:{trial}"
            client.set(key, value)
            backlog.hostile_keys.add(key)
        big = "x" * (10 * 2**20) + " fin"
        key = f"langgraph:checkpoint:huge-{trial}:1"
        client.set(key, json.dumps({"v": 4, "ts": "2020-01-01T00:00:00+00:00", "id": "h", "channel_values": {"messages": [lc_message("human", big, f"huge-{trial}")]}}))
        backlog.add(Seeded(f"huge-{trial}", "plain", key, [Msg(f"huge-{trial}", "human", big)]))
        run = archive_once(target)
        with psycopg.connect(target.db_url) as conn:
            quarantined = Counter(k for (k,) in conn.execute("SELECT key FROM quarantined_checkpoint"))
        missing = sorted(k for k in backlog.hostile_keys if quarantined[k] != 1)
        if missing:
            result.problem(f"not quarantined exactly once: {missing}")
        if run.returncode != 1:
            result.problem(f"a run that quarantined values exited {run.returncode}")
        if "Archived " not in run.stdout + run.stderr:
            result.problem(f"the run did not complete: {run.stderr.strip().splitlines()[-3:]}")
        if marker.exists():
            result.problem("the marker file exists: stored data was executed")
        result.count("hostile_values", len(backlog.hostile_keys))
        result.count("quarantined", sum(quarantined.values()))
        disturbed["quarantined"] = sum(quarantined.values())
        return f"exit {run.returncode}, {sum(quarantined.values())} quarantined of {len(backlog.hostile_keys)}"

    def not_quarantined_again() -> None:
        with psycopg.connect(target.db_url) as conn:
            again = conn.execute("SELECT COUNT(*) FROM quarantined_checkpoint").fetchone()[0]
        if again != disturbed["quarantined"]:
            result.problem("the clean run quarantined the same values again")

    return run_trials(result, target, rng, trials, conversations, disturb, expect_healthy=False, after=not_quarantined_again, log=log)


def scenario_disk_full(target: Target, rng: random.Random, conversations: int, log: Callable[[str], None] = print) -> Result:
    """The health file's filesystem is full (a 16 KB tmpfs, filled up): the run archives,
    says clearly that the health file could not be written, exits 1, leaves no temporary file.
    One trial, checked on the run itself: there is no clean run to follow."""
    result = Result("disk-full")
    mount = Path(tempfile.mkdtemp(prefix="relia-full-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True, text=True)
    if mounted.returncode != 0:
        result.facts["not_run"] = f"cannot mount a tmpfs: {mounted.stderr.strip()[:200]}"
        mount.rmdir()
        return result
    try:
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"\0" * 1024)
            except OSError:
                pass
        full = Target(target.db_url, target.redis_url, mount / "archiver_health.json")

        def disturb(trial: int, backlog: Backlog) -> None:
            run = archive_once(full)
            if run.returncode != 1:
                result.problem(f"exit {run.returncode} with a full disk for the health file")
            if "Cannot write the health file" not in run.stderr or "No space left on device" not in run.stderr:
                result.problem(f"no clear message about the health file: {run.stderr.strip().splitlines()[-2:]}")
            if [p.name for p in mount.iterdir() if p.name != "filler"]:
                result.problem(f"files left on the full disk: {[p.name for p in mount.iterdir()]}")
            tally = compare(backlog, archived_rows(full.db_url))
            result.total.add(tally)
            leftovers = leftover_keys(full.client(), backlog)
            result.leftover_keys += len(leftovers)
            log(f"  disk-full: exit {run.returncode}, {run.stderr.strip().splitlines()[-1][:160]}")

        run_trials(result, full, rng, 1, conversations, disturb, clean_run=False, log=log)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
        mount.rmdir()
    return result
