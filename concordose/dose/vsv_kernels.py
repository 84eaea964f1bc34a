"""Lu-177 voxel S-value kernels in soft tissue (packaged; provenance in ``data/PROVENANCE.md``).

Each file holds one octant, S(i, j, k) for i, j, k = 0..5 voxels from the source voxel, in
mGy/(MBq·s); the full kernel (11 × 11 × 11) is the octant mirrored about the source voxel. The
octant is symmetric under any permutation of (i, j, k) (checked on load), so the axis order of
the map does not matter. Beyond 5 voxels the kernel is truncated: the electron part of Lu-177
(mean beta range < 1 mm in tissue) is complete, the photon part beyond 11 mm (2.21 mm kernel)
or 22 mm (4.42 mm kernel) is not included.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import numpy as np
import numpy.typing as npt

from concordose.errors import ConfigurationError

GY_PER_MBQ_H_PER_MGY_PER_MBQ_S = 3600.0 / 1000.0
OCTANT_SIZE = 6

KERNEL_FILES: dict[str, tuple[float, str]] = {
    "2.21mm": (2.21, "lu177_vsv_2.21mm_soft_tissue.tsv"),
    "4.42mm": (4.42, "lu177_vsv_4.42mm_soft_tissue.tsv"),
}


@dataclass(frozen=True)
class VsvKernel:
    """A full voxel S-value kernel.

    Attributes:
        spacing_mm: the (isotropic) voxel size the kernel was computed for, mm.
        gy_per_mbq_h: dose to each voxel per MBq·h in the centre voxel, shape (11, 11, 11).
    """

    name: str
    spacing_mm: float
    gy_per_mbq_h: npt.NDArray[np.float64]


@cache
def vsv_kernel(name: str) -> VsvKernel:
    """The packaged kernel ``name`` (``"2.21mm"`` or ``"4.42mm"``).

    Raises:
        ConfigurationError: unknown name, or a file that is not a full symmetric octant.
    """
    if name not in KERNEL_FILES:
        raise ConfigurationError(f"unknown VSV kernel {name!r}; known: {', '.join(KERNEL_FILES)}")
    spacing_mm, file_name = KERNEL_FILES[name]
    text = files("concordose.data").joinpath(file_name).read_text(encoding="utf-8")
    octant = np.full((OCTANT_SIZE,) * 3, np.nan)
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) >= 4 and fields[0].strip().isdigit():
            i, j, k = (int(f) for f in fields[:3])
            octant[i, j, k] = float(fields[3])
    if np.isnan(octant).any():
        raise ConfigurationError(f"{file_name}: expected S for every i, j, k in 0..5")
    if not all(
        np.allclose(octant, octant.transpose(p), rtol=0.02)
        for p in ((1, 0, 2), (0, 2, 1), (2, 1, 0))
    ):
        raise ConfigurationError(f"{file_name}: octant not symmetric under axis permutations")
    mirror = np.abs(np.arange(-(OCTANT_SIZE - 1), OCTANT_SIZE))
    full = octant[np.ix_(mirror, mirror, mirror)] * GY_PER_MBQ_H_PER_MGY_PER_MBQ_S
    return VsvKernel(name=name, spacing_mm=spacing_mm, gy_per_mbq_h=full)
