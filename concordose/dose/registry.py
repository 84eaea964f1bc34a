"""Dose methods by name. Adding a method: one module in ``methods/`` and one line here.

``DOSE_METHODS`` take VOI totals (:class:`~concordose.dose.models.DoseInput`);
``VOXEL_DOSE_METHODS`` take TIA maps (:class:`~concordose.dose.models.VoxelDoseInput`).
"""

from __future__ import annotations

from concordose.dose.methods.local_deposition import LocalDeposition, VoxelLocalDeposition
from concordose.dose.methods.organ_s_values import OrganSValues
from concordose.dose.methods.sphere import SphereModel
from concordose.dose.methods.voxel_s_value import VoxelSValue
from concordose.dose.models import DoseMethod, VoxelDoseMethod
from concordose.dose.organ_svalues import Phantom
from concordose.method_registry import MethodRegistry

DOSE_METHODS: MethodRegistry[DoseMethod] = MethodRegistry(
    "dose",
    [
        SphereModel(),
        LocalDeposition(),
        OrganSValues(Phantom.ADULT_MALE),
        OrganSValues(Phantom.ADULT_FEMALE),
    ],
)

VOXEL_DOSE_METHODS: MethodRegistry[VoxelDoseMethod] = MethodRegistry(
    "voxel dose",
    [
        VoxelLocalDeposition(),
        VoxelSValue("2.21mm"),
        VoxelSValue("4.42mm"),
        VoxelSValue("2.21mm", density_correction=True),
        VoxelSValue("4.42mm", density_correction=True),
    ],
)
