"""Where a cycle's voxel chunks run (voxel fits in blocks of curves, VSV convolutions in slabs):
the :class:`~concordose.chunk_map.ChunkMap` the voxel-dose task hands to the library.

* ``default``: here, one chunk after another (:func:`concordose.chunk_map.serial_map`);
* ``dask`` / ``dask:ADDRESS`` with the task already on a Dask worker (a sweep's cycle under the
  Dask runner): the cluster that runs it, through ``distributed.worker_client`` — the cycle's
  task secedes from its worker's thread pool while it waits, so its chunks can use that slot
  (with one thread per worker and every worker busy with a cycle, nothing would run them
  otherwise);
* ``dask:ADDRESS`` elsewhere (``process-cycle --task-runner dask:…``): a client of that
  scheduler;
* ``dask`` elsewhere: a ``LocalCluster`` started for this cycle's voxel work.

Chunks are shipped one by one (``scatter``: a chunk is a block of curves or a slab with its
halo, never the 4-D maps) and at most :data:`CHUNKS_IN_FLIGHT_PER_THREAD` per worker thread are
in flight, so the cycle's process holds a bounded number of chunks and results. The results
do not depend on the map (:mod:`concordose.chunk_map`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import distributed

from concordose.chunk_map import ChunkMap, serial_map
from concordose.settings import TASK_RUNNER_DEFAULT, dask_scheduler_address

ChunkT = TypeVar("ChunkT")
ResultT = TypeVar("ResultT")

CHUNKS_IN_FLIGHT_PER_THREAD = 2
"""Chunks submitted and not yet collected, per worker thread of the cluster: one running, one
waiting, so no thread idles between two chunks."""


class DaskChunkMap:
    """A :class:`~concordose.chunk_map.ChunkMap` over a Dask cluster: each chunk one Dask task
    (key prefix the function's name), results in order, a bounded number in flight."""

    def __init__(self, client: distributed.Client) -> None:
        self.client = client
        threads = sum(client.nthreads().values())
        self.in_flight = max(2, CHUNKS_IN_FLIGHT_PER_THREAD * threads)

    def __call__(
        self, function: Callable[[ChunkT], ResultT], chunks: Iterable[ChunkT], /
    ) -> Iterator[ResultT]:
        """Submit the chunks as Dask tasks; yield their results in the chunks' order."""
        pending: deque[tuple[distributed.Future[ChunkT], distributed.Future[ResultT]]] = deque()
        for chunk in chunks:
            data = self.client.scatter(chunk, hash=False)
            pending.append((data, self.client.submit(function, data, pure=False)))
            if len(pending) >= self.in_flight:
                yield pending.popleft()[1].result()
        while pending:
            yield pending.popleft()[1].result()


def _on_dask_worker() -> bool:
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


@contextmanager
def voxel_chunk_map(task_runner: str) -> Iterator[ChunkMap]:
    """The map for ``task_runner`` (see the module docstring), open for the block.

    Raises:
        ConfigurationError: ``task_runner`` is not a task runner.
    """
    address = dask_scheduler_address(task_runner)
    if task_runner == TASK_RUNNER_DEFAULT:
        yield serial_map
    elif _on_dask_worker():
        with distributed.worker_client() as client:
            yield DaskChunkMap(client)
    elif address is not None:
        with distributed.Client(address) as client:
            yield DaskChunkMap(client)
    else:
        with (
            distributed.LocalCluster(
                processes=True, threads_per_worker=1, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield DaskChunkMap(client)
