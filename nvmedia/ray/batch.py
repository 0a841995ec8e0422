"""``nvmedia batch --engine ray``: the batch's requests answered by Ray tasks, records written in input order.

Each Ray task takes a block of units and answers them with the local batch engine
(``batch.run_batch``: media prepared, ``-j`` requests in flight, the assets of each
request deleted once its answer is in), so a record is the same whichever engine
produced it. The driver writes the records as blocks come back, in input order.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, Final

from ..batch import BatchSettings, Unit, run_batch
from .cli import finished_blocks, ray_job
from .session import check_address, import_ray

UNITS_PER_TASK: Final = 16
"""Units per Ray task: enough to keep ``-j`` requests in flight in each task, small enough to spread."""
UNIT_COLUMN: Final = "unit"
RECORD_COLUMN: Final = "record"


def run_batch_on_ray(
    units: Sequence[Unit],
    settings: BatchSettings,
    on_record: Callable[[Unit, dict[str, Any]], None],
    *,
    address: str | None = None,
    cpus: int = 2,
    on_stopping: Callable[[int], None] | None = None,
) -> None:
    """Answer ``units`` on Ray and hand each record to ``on_record`` in input order.

    Args:
        units: the requests (``batch.plan_units``).
        settings: what every request shares; its chat client is sent to the tasks as its
            configuration, and each task opens its own connections.
        on_record: called with each unit and its record, in input order, on the driver.
        address: a cluster to join; None starts a one-node cluster on loopback with ``cpus`` CPUs.
        cpus: CPUs of the local cluster.
        on_stopping: told, once interrupted, that no request is waited for (Ray's tasks are dropped;
            a task stopped between its upload and its answer may leave an asset).

    Raises:
        ConfigError: Ray is missing or the cluster cannot be reached.
    """
    if address is not None:
        address = check_address(address)
    ray = import_ray(local=address is None)
    if not units:
        return
    rows = [{UNIT_COLUMN: pickle.dumps(unit, protocol=5)} for unit in units]
    with ray_job(ray, address, cpus):
        blocks = -(-len(rows) // UNITS_PER_TASK)
        answered = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
            _AnswerBlock,
            fn_constructor_args=(pickle.dumps(settings, protocol=5),),
            batch_size=UNITS_PER_TASK,
            batch_format="pyarrow",
            concurrency=(1, max(1, cpus)),
        )
        done = 0
        try:
            for batch in finished_blocks(answered):
                for blob in batch.column(RECORD_COLUMN).to_pylist():
                    on_record(units[done], pickle.loads(blob))
                    done += 1
        except KeyboardInterrupt:
            if on_stopping is not None:
                on_stopping(0)
            raise


class _AnswerBlock:
    """A Ray actor answering blocks of units; it holds the chat client (one connection pool) for its life."""

    def __init__(self, settings_blob: bytes) -> None:
        self.settings: BatchSettings = pickle.loads(settings_blob)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        units: list[Unit] = [pickle.loads(blob) for blob in batch.column(UNIT_COLUMN).to_pylist()]
        records: dict[int, bytes] = {}
        run_batch(units, self.settings, lambda unit, record: records.__setitem__(unit.index, pickle.dumps(record)))
        blobs = [records[unit.index] for unit in units]
        return pa.table({RECORD_COLUMN: pa.array(blobs, type=pa.large_binary())})
