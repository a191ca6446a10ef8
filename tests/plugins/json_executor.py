"""An executor that ships every work item and every record through JSON, as a distributed executor (Spark
partitions, a provider batch file) must: registered by a test, it proves the same job yields the same
records whether or not its items and records left the process."""
from __future__ import annotations

import json
from typing import Any

from sdstudio.engine import Engine, WorkItem, default_handler
from sdstudio.store import Record

NAME = "json-roundtrip"


def shipped(data: Any) -> Any:
    return json.loads(json.dumps(data))


class JsonRoundTripExecutor(Engine):
    shipped_items = 0

    def execute(self, items, handler=None):
        handler = handler or default_handler
        remote = [WorkItem.from_json(shipped(item.to_json())) for item in items]
        JsonRoundTripExecutor.shipped_items += len(remote)

        def remote_handler(item: WorkItem, completion: Any) -> list[Record]:
            return [Record.from_json(shipped(record.to_json())) for record in handler(item, completion)]

        return self.run(remote, remote_handler)
