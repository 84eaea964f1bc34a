"""Organ S-value method: OpenDose ICRP-110 AM/AF S-values with patient-mass self-dose scaling.

D_t [Gy] = Σ_s TIA_s [MBq·h] · S'(t ← s) [mGy/(MBq·s)] · 3600 s/h / 1000 mGy/Gy, over the VOIs
that are organs of the packaged tables (liver, spleen, left and right kidney), where

* the self term is scaled to the patient's organ mass, S'(t ← t) = S(t ← t) · m_phantom / m_patient
  (the usual first-order mass correction for the non-penetrating electron part, which carries
  about 96–99 % of Lu-177 self-dose; MIRD Pamphlet 11 / OLINDA practice);
* cross terms between the packaged organs are kept unscaled; cross-dose from lesions and from
  the remainder of the body is *not* included (those sources are not in the packaged tables).

VOIs that are not packaged organs (lesions, other tissues) get NaN with the reason; a target
whose own TIA or a source's TIA failed gets NaN with the reason (nothing is guessed).
Uncertainty: TIA SDs and the tables' Monte Carlo standard errors, combined term by term.
"""

from __future__ import annotations

import numpy as np

from concordose.dose.models import DoseBatch, DoseInput
from concordose.dose.organ_svalues import Phantom, opendose_table, organ_key
from concordose.kinetics.models import STATUS_OK, settings_hash

GY_PER_MGY_S_PER_H = 3600.0 / 1000.0  # mGy/(MBq·s) · MBq·h → Gy


class OrganSValues:
    """Registry entries ``organ_s_am`` and ``organ_s_af``."""

    version = "1"

    def __init__(self, phantom: Phantom) -> None:
        self.phantom = phantom
        self.name = f"organ_s_{phantom.value.lower()}"

    def settings(self) -> dict[str, object]:
        """Table, phantom and scaling."""
        return {
            "table": "OpenDose ICRP-110 Lu-177",
            "phantom": self.phantom.value,
            "self_dose_mass_scaling": "linear (m_phantom / m_patient)",
            "cross_dose": "between packaged organs only",
        }

    def compute(self, dose_input: DoseInput) -> DoseBatch:
        """Mean dose per organ VOI; NaN with the reason for anything else."""
        table = opendose_table(self.phantom)
        n_voi = len(dose_input.labels)
        tia = np.asarray(dose_input.tia_mbq_h, dtype=np.float64)
        mass = np.asarray(dose_input.mass_g, dtype=np.float64)
        keys = [organ_key(label) for label in dose_input.labels]
        organ_index = {key: i for i, key in enumerate(table.organs)}
        duplicated = {k for k in keys if k is not None and keys.count(k) > 1}

        # VOI i → organ row, for VOIs that are packaged organs (first occurrence only).
        voi_rows = [
            (i, organ_index[k]) for i, k in enumerate(keys) if k is not None and k not in duplicated
        ]
        voi_of_organ = {row: i for i, row in voi_rows}
        dose_gy = np.full(n_voi, np.nan)
        sd_gy = np.full(n_voi, np.nan)
        status: list[str] = []
        for i, key in enumerate(keys):
            if key is None:
                status.append(
                    f"no OpenDose {self.phantom.value} S-value for VOI {dose_input.labels[i]!r} "
                    f"(organs covered: {', '.join(table.organs)})"
                )
            elif key in duplicated:
                status.append(f"more than one VOI is organ {key!r}; cannot assign its TIA")
            else:
                status.append(STATUS_OK)

        if voi_rows:
            vois = np.array([i for i, _ in voi_rows])
            rows = np.array([r for _, r in voi_rows])
            s_matrix = table.s_mgy_per_mbq_s[np.ix_(rows, rows)].copy()
            se_matrix = table.s_se_mgy_per_mbq_s[np.ix_(rows, rows)].copy()
            patient_mass = mass[vois]
            scale = np.where(patient_mass > 0, table.mass_g[rows] / patient_mass, np.nan)
            diagonal = np.arange(rows.size)
            s_matrix[diagonal, diagonal] *= scale
            se_matrix[diagonal, diagonal] *= scale
            source_tia = tia[vois]
            terms = s_matrix * source_tia[None, :] * GY_PER_MGY_S_PER_H
            dose_gy[vois] = terms.sum(axis=1)
            if dose_input.tia_sd_mbq_h is not None:
                tia_sd = np.asarray(dose_input.tia_sd_mbq_h, dtype=np.float64)[vois]
                variance = (
                    (s_matrix * tia_sd[None, :]) ** 2 + (se_matrix * source_tia[None, :]) ** 2
                ) * GY_PER_MGY_S_PER_H**2
                sd_gy[vois] = np.sqrt(variance.sum(axis=1))
            for i, row in voi_rows:
                if not np.isfinite(tia[i]):
                    status[i] = "no TIA (kinetics failed)"
                elif not (np.isfinite(mass[i]) and mass[i] > 0):
                    status[i] = f"mass {mass[i]!r} g not positive"
                else:
                    failed = [
                        table.organs[r]
                        for r in voi_of_organ
                        if r != row and not np.isfinite(tia[voi_of_organ[r]])
                    ]
                    if failed:
                        status[i] = f"cross-dose source(s) {', '.join(failed)} have no TIA"
        ok = np.array([s == STATUS_OK for s in status], dtype=bool)
        dose_gy = np.where(ok, dose_gy, np.nan)
        return DoseBatch(
            method=self.name,
            method_version=self.version,
            parameters_hash=settings_hash(self.settings()),
            mean_dose_gy=dose_gy,
            status=tuple(status),
            mean_dose_sd_gy=None
            if dose_input.tia_sd_mbq_h is None
            else np.where(ok, sd_gy, np.nan),
        )
