"""The reliability trials: try hard to break the archiver's promise, and count what breaks.

The promise: every message is in PostgreSQL or still in Redis, and after one clean run it is
in PostgreSQL exactly once. A trial seeds a backlog whose messages are known, runs the real
`manage.py archive_checkpoints` as its own process while something goes wrong, checks the
promise at once, runs the archiver once more undisturbed and compares the archive with what
was seeded: message ids and contents, in order.

- `seed.py`: the backlog, and what the archive must hold of it.
- `check.py`: the archive against the backlog; what is left in Redis; the run's log.
- `processes.py`: the archiver's process and the servers under it, started, stopped, killed.
- `trials.py`: what every trial does after its disturbance, and a scenario's result.
- `scenarios.py`: the nine disturbances.

bench/reliability.py runs them from the command line at full size and writes the figures
(docs/reliability.md); tests/test_reliability.py runs them small.
"""
