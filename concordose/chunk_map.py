"""How voxel-level work is spread: a ``map``-like callable the science functions take.

Voxel fits (:func:`concordose.kinetics.voxel.fit_voxels`) and VSV convolutions
(:mod:`concordose.dose.methods.voxel_s_value`) cut their work into independent chunks — blocks
of voxel curves, slabs of the TIA map with their halo — described by small picklable objects,
and hand ``(function, chunks)`` to a :class:`ChunkMap`. The chunk plan never depends on the
map, so any map gives the same numbers: :func:`serial_map` (the default, in this process) or
one that submits the chunks to a Dask cluster (``tasks/voxel_chunks.py``; the library never
imports Dask or Prefect). A map returns the results in the order of the chunks and may keep
only a few chunks in flight (memory stays bounded), so it takes an iterable and returns one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar

ChunkT = TypeVar("ChunkT")
ResultT = TypeVar("ResultT")


class ChunkMap(Protocol):
    """``map(function, chunks)``: ``function`` applied to every chunk, results in chunk order.

    ``function`` is a module-level function and each chunk a picklable value, so an
    implementation may run them in other processes or on other machines.
    """

    def __call__(
        self, function: Callable[[ChunkT], ResultT], chunks: Iterable[ChunkT], /
    ) -> Iterator[ResultT]:
        """Apply ``function`` to each chunk; results in the chunks' order."""
        ...


def serial_map(
    function: Callable[[ChunkT], ResultT], chunks: Iterable[ChunkT], /
) -> Iterator[ResultT]:
    """Every chunk in this process, one at a time and lazily (one chunk in memory at once)."""
    return map(function, chunks)
