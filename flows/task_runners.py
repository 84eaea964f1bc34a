"""Where the flows that run cycles send their work (issue 19): this process's threads, or a
Dask cluster through prefect-dask's ``DaskTaskRunner``.

The runner is named by a string, the same for the CLI's ``--task-runner``, the flows'
``task_runner`` parameter (a deployment passes it) and ``CONCORDOSE_TASK_RUNNER``
(:func:`concordose.settings.check_task_runner`): ``default``, ``dask`` (a ``LocalCluster`` for
the run: one single-threaded worker process per core, no dashboard port) or ``dask:ADDRESS``
(an existing scheduler; its workers need this package installed).
"""

from __future__ import annotations

from typing import Any, cast

from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect_dask.task_runners import DaskTaskRunner

from concordose.settings import dask_scheduler_address

LOCAL_CLUSTER_KWARGS: dict[str, object] = {
    "processes": True,
    "threads_per_worker": 1,
    "dashboard_address": None,
}
"""``dask``: worker processes (the fits and FFTs hold the GIL for long stretches), one thread
each (a cycle holds its images: one per worker bounds memory), no dashboard port opened."""


def dask_task_runner(task_runner: str) -> TaskRunner[PrefectFuture[Any]]:
    """prefect-dask's runner for ``dask`` (a LocalCluster for the run) or ``dask:ADDRESS``."""
    address = dask_scheduler_address(task_runner)
    runner = (
        DaskTaskRunner(address=address)
        if address is not None
        else DaskTaskRunner(cluster_kwargs=dict(LOCAL_CLUSTER_KWARGS))
    )
    # Prefect types TaskRunner invariantly in its future type; the Dask runner's are
    # PrefectDaskFutures, which are PrefectFutures.
    return cast("TaskRunner[PrefectFuture[Any]]", runner)


def dask_cluster_threads() -> int:
    """Worker threads of the Dask cluster of the current flow run's ``DaskTaskRunner``.

    Raises:
        RuntimeError: not inside a flow run with a ``DaskTaskRunner``.
    """
    context = FlowRunContext.get()
    runner = context.task_runner if context is not None else None
    if not isinstance(runner, DaskTaskRunner):
        raise RuntimeError("dask_cluster_threads needs a flow run with a DaskTaskRunner")
    return int(sum(runner.client.nthreads().values()))
