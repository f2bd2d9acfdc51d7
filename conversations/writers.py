"""The writer threads: batches are stored while the run reads the next ones from Redis."""

from __future__ import annotations

import queue
import threading

import redis
from django.db import connection

from conversations import conf
from conversations.batches import Batch, store_batch
from conversations.options import Options
from conversations.runs import Counts, RunReport


class BatchWriter:
    """Stores batches on threads of their own (`WRITERS`, each with its own database
    connection), so reading the next batch from Redis overlaps with storing this one, and
    one batch's COPY runs in PostgreSQL while another's rows are formatted or its keys deleted.
    docs/performance.md has what that gains.

    Safety design: each batch is stored by one thread, which deletes its keys only after its
    own transaction committed; batches hold different conversations, so the order between
    them does not matter (a conversation SCAN lists twice meets the unique key and the
    compare-and-delete, as a repeated run would). At most one batch waits while the writers
    store theirs, so memory stays bounded. Each batch is counted on its own (what it stored
    before a failure too), and the batches' counts are added to the run's report at close, in
    the run's thread. The first failure of a writer (anything, even SystemExit) stops the
    storing of later batches and is raised in the run's thread at the next submit or at close;
    read batches that were never stored simply stay in Redis.
    """

    def __init__(self, client: redis.Redis, opts: Options, report: RunReport, writers: int | None = None) -> None:
        self.client, self.opts, self.report = client, opts, report
        self.queue: queue.Queue[Batch | None] = queue.Queue(maxsize=1)
        self.failure: BaseException | None = None
        self.stopped = False  # set on the first failure, never cleared
        self.counted: list[Counts] = []  # what each batch stored counted
        self.lock = threading.Lock()  # for the first failure, and the batches' counts
        if writers is None:  # SQLite takes one writer at a time
            writers = conf.writers() if connection.vendor == "postgresql" else 1
        self.threads = [
            threading.Thread(target=self._work, name=f"archive-writer-{i}", daemon=True) for i in range(writers)
        ]
        for thread in self.threads:
            thread.start()

    def submit(self, batch: Batch) -> None:
        self._raise_failure()
        self.queue.put(batch)

    def close(self) -> None:
        """Wait for the batches handed over, add what each of them counted to the run's report,
        and raise a writer's failure, if any."""
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()
        for counts in self.counted:
            self.report.add(counts)
        self.counted = []
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure

    def _work(self) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                if not self.stopped:
                    counts = Counts()
                    try:
                        store_batch(self.client, batch, self.opts, counts)
                    except BaseException as exc:  # handed to the run's thread, which decides
                        with self.lock:
                            if not self.stopped:
                                self.stopped = True
                                self.failure = exc
                    with self.lock:
                        self.counted.append(counts)
        finally:
            connection.close()  # this thread's own database connection

