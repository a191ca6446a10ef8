"""The driver's end of a Spark run: a small TCP server the partitions stream their outcomes to.

Why not return outcomes from the partitions: Spark hands a partition's result back only when the partition
ends, so progress would jump at the end of each partition, and a partition lost mid-way (its Python worker or
executor killed) would take every reply it had already paid for with it. Instead each partition connects
here, says which keys it holds, learns which of them are already in (a retried partition skips those: an item
already returned is never paid twice), receives the run's secrets, and sends each outcome as soon as it is
done. The driver writes what arrives through the job's one sink.

The protocol is newline-delimited JSON over one TCP connection per partition attempt; the first message
carries a per-run random token (compared in constant time), anything else is dropped unanswered. The server
listens on the driver's address (loopback for a local master) on a random port, for the run only.
"""
from __future__ import annotations

import hmac
import json
import queue
import secrets
import socket
import socketserver
import threading
from typing import Any

# how long a retried partition waits for the connection of its lost attempt to be read to its end (the outcomes
# that attempt sent before it died count as in), before it goes on without
EARLIER_ATTEMPT_WAIT_S = 60.0


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    sock.sendall(json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


class Collector:
    """Outcomes of one run, as they arrive: ``events`` is a queue of ``(connection id, message)`` read by the
    driver's loop; ``received`` the keys already in (whatever their status), ``partial`` rows part-way."""

    def __init__(self, host: str, hello_reply: dict[str, Any]):
        self.token = secrets.token_urlsafe(32)
        self.events: queue.Queue[tuple[int, dict[str, Any]]] = queue.Queue()
        self.received: set[str] = set()
        # a custom workflow's row streams a record after each step ("final": false until its last): the newest
        # such record per row, handed to a retried attempt so the steps already answered are not asked again
        self.partial: dict[str, dict[str, Any]] = {}
        self._hello_reply = hello_reply  # the secrets and endpoint every authenticated partition gets
        self._lock = threading.Condition()
        self._open: dict[int, int] = {}  # partition index -> connections of it still being read
        self._next_id = 0
        self.accepting = True
        collector = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                collector._serve(self.connection, self.rfile)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        self._server = Server((host, 0), Handler)
        self.host, self.port = host, self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="sdstudio-spark-collector",
                                        daemon=True)

    def address(self) -> tuple[str, int, str]:
        """What a partition needs to reach this run (host, port, token): shipped inside the task closure."""
        return self.host, self.port, self.token

    def __enter__(self) -> "Collector":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.accepting = False
        self._server.shutdown()
        self._server.server_close()

    def idle(self) -> bool:
        """Every connection read to its end (after the Spark job, the last outcomes may still be in transit)."""
        with self._lock:
            return not any(self._open.values())

    # -- one partition attempt -----------------------------------------------------------------------
    def _serve(self, conn: socket.socket, rfile: Any) -> None:
        try:
            hello = json.loads(rfile.readline() or b"{}")
        except ValueError:
            return
        if not self.accepting or not hmac.compare_digest(str(hello.get("token", "")), self.token):
            return  # not this run's partition: nothing is said, nothing is sent
        partition = int(hello.get("partition", -1))
        with self._lock:
            # a retry of a partition is answered once its lost attempt's connection has been read to its end
            self._lock.wait_for(lambda: not self._open.get(partition), timeout=EARLIER_ATTEMPT_WAIT_S)
            self._open[partition] = self._open.get(partition, 0) + 1
            self._next_id += 1
            conn_id = self._next_id
            skip = [key for key in hello.get("keys", []) if key in self.received]
            partial = {key: self.partial[key] for key in hello.get("keys", []) if key in self.partial}
        try:
            send_message(conn, {**self._hello_reply, "skip": skip, **({"partial": partial} if partial else {})})
            self.events.put((conn_id, {"skipped": len(skip), "partition": partition}))
            for line in rfile:
                try:
                    message = json.loads(line)
                except ValueError:
                    break  # a line cut short: the attempt died while writing it
                outcome = message.get("outcome")
                if outcome is not None:
                    with self._lock:
                        if outcome["key"] in self.received:  # two attempts of one partition: the first counts
                            message = {k: v for k, v in message.items() if k != "outcome"}
                        elif outcome.get("final", True):
                            self.received.add(outcome["key"])
                            self.partial.pop(outcome["key"], None)
                        else:  # a row part-way through its steps: a retried attempt takes it from here
                            self.partial[outcome["key"]] = outcome["records"][-1]
                self.events.put((conn_id, message))
        except OSError:
            pass
        finally:
            with self._lock:
                self._open[partition] -= 1
                self._lock.notify_all()

