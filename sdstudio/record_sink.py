"""Where a run's outcomes go: each item's records priced and counted, buffered, and written in batched transactions
(every ``FLUSH_ROWS`` rows or ``FLUSH_SECONDS``) on the run's one writer thread, while its workers send on.

A mixin of ``Engine``: the local engine, the Spark driver and the batch poller all count, price and write an item's
records the same way (they override ``_add`` where they buffer differently).
"""
from __future__ import annotations

import asyncio
import time

from .store import Record

FLUSH_ROWS, FLUSH_SECONDS = 50, 1.0
# rows waiting for the writer before workers stop sending and wait for it: a writer that falls behind (a slow
# or failing disk) must not let paid replies pile up in memory, where a failed write would lose them all
MAX_BUFFERED_ROWS = 2 * FLUSH_ROWS


class RecordSink:
    """The writing half of ``Engine`` (its state is set up by ``Engine.__init__``: price, progress, store, buffer,
    writer thread, flush lock, ``after_write``)."""

    def _tally(self, records: list[Record], ok: bool) -> None:
        """Price an item's records (each carries what it cost, so a job's cost is the sum of its records) and count
        the item done: every executor's sink (SQLite here, the driver for Spark, the batch poller) does this first."""
        for rec in records:
            rec.cost_usd = self.price.cost(rec.tokens_in, rec.tokens_out) if (rec.tokens_in or rec.tokens_out) else 0.0
        self.progress.done += 1
        if ok:
            self.progress.ok += 1
        else:
            self.progress.failed += 1

    def _add(self, records: list[Record], ok: bool) -> None:
        self._tally(records, ok)
        self._buffer.extend(records)
        self._report()
        if len(self._buffer) >= FLUSH_ROWS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            # written on the writer thread while this worker moves on to its next request
            self._pending_flush = asyncio.ensure_future(self._flush())

    async def _flush(self, force: bool = False) -> None:
        if not self._buffer or self._flush_lock is None:
            return
        if self._flush_lock.locked() and not force:
            return  # a flush is under way; these rows go with the next one
        async with self._flush_lock:
            batch, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
            if batch and self._store_error is None:
                try:
                    await asyncio.get_running_loop().run_in_executor(self._writer, self._write, batch)
                except Exception as exc:  # noqa: BLE001 - full disk, replaced database...: stop sending at once
                    self._store_error = exc

    def _write_now(self, batch: list[Record]) -> None:
        """Write ``batch`` on this thread, for a sink that runs off the event loop (the Spark driver, the batch
        poller); a failed write stops the run at once, as ``_flush`` does."""
        if batch and self._store_error is None:
            try:
                self._write(batch)
            except Exception as exc:  # noqa: BLE001 - full disk, replaced database...: stop the run at once
                self._store_error = exc

    def _write(self, batch: list[Record]) -> None:
        """Rows first, then stamps (a later step's outcome merged into its item's row: the store applies a
        stamp only to a row that is still failed, so a step never overwrites an item that is done)."""
        rows = [rec for rec in batch if not rec.stamp]
        if rows:
            self.store.add_records(rows, replace_failed_requests=True)
        stamps = [rec for rec in batch if rec.stamp]
        if stamps:
            self.store.apply_stamps(stamps)
        if self.after_write is not None:
            self.after_write()
