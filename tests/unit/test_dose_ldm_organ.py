"""LDM physics, OpenDose organ S-values, uncertainty and the dose registries."""

from __future__ import annotations

import numpy as np
import pytest

from concordose.dose.methods.local_deposition import (
    LocalDeposition,
    VoxelLocalDeposition,
    ldm_gy_per_mbq_h_per_g,
)
from concordose.dose.methods.organ_s_values import OrganSValues
from concordose.dose.models import DoseInput, VoxelDoseInput
from concordose.dose.organ_svalues import Phantom, opendose_table
from concordose.dose.registry import DOSE_METHODS, VOXEL_DOSE_METHODS
from concordose.dose.uncertainty import dose_sd_gy
from concordose.errors import ConcordoseError
from concordose.kinetics.models import STATUS_OK
from concordose.nuclides import emission_energies


def test_icrp107_energies_of_lu177() -> None:
    # ICRP-107: electrons 147.92 keV (133.27 + 13.52 + 1.13), photons 35.10 keV per decay.
    energies = emission_energies("Lu-177")
    assert energies.electron_kev == pytest.approx(147.92, abs=0.01)
    assert energies.photon_kev == pytest.approx(35.10, abs=0.01)
    assert energies.beta_kev == pytest.approx(133.27, abs=0.01)
    assert energies.conversion_electron_kev == pytest.approx(13.52, abs=0.01)
    assert energies.auger_kev == pytest.approx(1.13, abs=0.01)


def test_ldm_constant_is_0_08532_gy_per_h_per_mbq_per_g() -> None:
    assert ldm_gy_per_mbq_h_per_g() == pytest.approx(0.08532, rel=2e-4)
    # The photon part is stated, not silently added: fully absorbed photons add 35.10/147.92.
    assert ldm_gy_per_mbq_h_per_g(photon_absorbed_fraction=1.0) / ldm_gy_per_mbq_h_per_g() == (
        pytest.approx(1 + 35.10 / 147.92, rel=1e-3)
    )


def test_ldm_voi_dose_and_reasons() -> None:
    batch = LocalDeposition().compute(
        DoseInput(
            labels=("lesion", "failed", "empty"),
            tia_mbq_h=np.array([1000.0, np.nan, 10.0]),
            mass_g=np.array([10.0, 10.0, 0.0]),
            tia_sd_mbq_h=np.array([50.0, 1.0, 1.0]),
        )
    )
    assert batch.mean_dose_gy[0] == pytest.approx(1000.0 * 0.08532 / 10.0, rel=2e-4)
    assert batch.status[0] == STATUS_OK
    assert "kinetics failed" in batch.status[1]
    assert "not positive" in batch.status[2]
    assert np.isnan(batch.mean_dose_gy[1:]).all()
    assert batch.mean_dose_sd_gy is not None
    assert batch.mean_dose_sd_gy[0] == pytest.approx(0.05 * batch.mean_dose_gy[0])


def test_voxel_ldm_uses_voxel_mass_and_density() -> None:
    tia = np.zeros((3, 3, 3))
    tia[1, 1, 1] = 2.0
    density = np.ones_like(tia)
    density[1, 1, 1] = 2.0
    spacing = (2.0, 4.0, 5.0)  # 0.04 mL voxel
    plain = VoxelLocalDeposition().compute_map(VoxelDoseInput(tia, spacing))
    dense = VoxelLocalDeposition().compute_map(VoxelDoseInput(tia, spacing, density))
    expected = 2.0 * ldm_gy_per_mbq_h_per_g() / 0.04
    assert plain.dose_gy[1, 1, 1] == pytest.approx(expected)
    assert dense.dose_gy[1, 1, 1] == pytest.approx(expected / 2.0)
    assert plain.dose_gy.sum() == pytest.approx(expected)


def test_voi_input_is_checked() -> None:
    with pytest.raises(ConcordoseError, match=r"needs arrays of shape \(2,\)"):
        DoseInput(labels=("a", "b"), tia_mbq_h=np.ones(2), mass_g=np.ones(3))


def test_voxel_input_is_checked() -> None:
    with pytest.raises(ConcordoseError, match="3-D"):
        VoxelDoseInput(np.zeros((3, 3)), (1.0, 1.0, 1.0))
    with pytest.raises(ConcordoseError, match="spacing"):
        VoxelDoseInput(np.zeros((3, 3, 3)), (1.0, 0.0, 1.0))
    with pytest.raises(ConcordoseError, match="non-negative"):
        VoxelDoseInput(-np.ones((3, 3, 3)), (1.0, 1.0, 1.0))
    with pytest.raises(ConcordoseError, match="density map has shape"):
        VoxelDoseInput(np.zeros((3, 3, 3)), (1.0, 1.0, 1.0), np.ones((2, 3, 3)))


@pytest.mark.parametrize("phantom", list(Phantom))
def test_opendose_self_s_agrees_with_electron_absorption(phantom: Phantom) -> None:
    # S_self · m_phantom vs full electron absorption (85.32 mGy·g/(MBq·h) = 0.0237 /s): photons
    # add 1 % (kidneys, spleen) to 4 % (liver), so 1.00–1.06; this also checks the units.
    table = opendose_table(phantom)
    ldm_mgy_g_per_mbq_s = ldm_gy_per_mbq_h_per_g() * 1000.0 / 3600.0
    ratio = np.diag(table.s_mgy_per_mbq_s) * table.mass_g / ldm_mgy_g_per_mbq_s
    assert np.all((ratio > 1.0) & (ratio < 1.06)), ratio
    # per target, each cross term is < 3 % of the self term (photons only)
    s = table.s_mgy_per_mbq_s
    off_diagonal = ~np.eye(4, dtype=bool)
    assert np.all((s / np.diag(s)[:, None])[off_diagonal] < 0.03)


def test_organ_s_values_scale_self_dose_with_patient_mass() -> None:
    table = opendose_table(Phantom.ADULT_MALE)
    liver = table.organs.index("liver")
    phantom_mass = table.mass_g[liver]
    method = OrganSValues(Phantom.ADULT_MALE)
    doses = [
        method.compute(
            DoseInput(labels=("Liver",), tia_mbq_h=np.array([1000.0]), mass_g=np.array([m]))
        ).mean_dose_gy[0]
        for m in (phantom_mass, 2 * phantom_mass)
    ]
    expected = 1000.0 * table.s_mgy_per_mbq_s[liver, liver] * 3.6
    assert doses[0] == pytest.approx(expected, rel=1e-12)
    assert doses[1] == pytest.approx(expected / 2, rel=1e-12)


def test_organ_s_values_cross_dose_lesions_and_failures() -> None:
    method = OrganSValues(Phantom.ADULT_FEMALE)
    table = opendose_table(Phantom.ADULT_FEMALE)
    masses = table.mass_g
    labels = ("liver", "spleen", "kidney_left", "kidney_right", "lesion_1")
    tia = np.array([5000.0, 1500.0, 2000.0, 2000.0, 800.0])
    batch = method.compute(
        DoseInput(
            labels=labels,
            tia_mbq_h=tia,
            mass_g=np.append(masses, 20.0),
            tia_sd_mbq_h=0.05 * tia,
        )
    )
    # at phantom masses the result is exactly S · TIA summed over the four sources
    expected = table.s_mgy_per_mbq_s @ tia[:4] * 3.6
    np.testing.assert_allclose(batch.mean_dose_gy[:4], expected, rtol=1e-12)
    assert batch.status[:4] == (STATUS_OK,) * 4
    assert "no OpenDose AF S-value for VOI 'lesion_1'" in batch.status[4]
    assert batch.mean_dose_sd_gy is not None
    # self-dose dominates: 5 % TIA uncertainty gives ~5 % dose uncertainty
    np.testing.assert_allclose(batch.mean_dose_sd_gy[:4] / batch.mean_dose_gy[:4], 0.05, rtol=0.02)

    failed = method.compute(
        DoseInput(labels=labels[:2], tia_mbq_h=np.array([np.nan, 1.0]), mass_g=masses[:2])
    )
    assert "kinetics failed" in failed.status[0]
    assert "cross-dose source(s) liver have no TIA" in failed.status[1]
    assert np.isnan(failed.mean_dose_gy).all()


def test_uncertainty_adds_relative_terms_in_quadrature() -> None:
    sd = dose_sd_gy(10.0, 100.0, 3.0, s_value_relative_sd=0.04)
    assert float(sd) == pytest.approx(10.0 * 0.05)
    assert np.isnan(dose_sd_gy(10.0, 0.0, 1.0))


def test_registries_list_the_methods() -> None:
    assert DOSE_METHODS.names() == ["ldm", "organ_s_af", "organ_s_am", "sphere"]
    assert VOXEL_DOSE_METHODS.names() == [
        "ldm",
        "vsv_2.21mm",
        "vsv_2.21mm_density",
        "vsv_4.42mm",
        "vsv_4.42mm_density",
    ]
