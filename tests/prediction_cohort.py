"""A synthetic cohort for the ``dose_prediction`` builder (issue 20 item 3): PET features and
published dose rows whose SUV-dose relation is known."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

from concordose.results.provenance import Provenance

REFERENCE = "spectacular_6tp"
PROVENANCE = Provenance(run_id="run-1", created_at=datetime(2026, 12, 6, tzinfo=UTC))
SITES = ("brussels", "lyon", "milan")
ORGANS = {"kidney_left": 0.6, "liver": 0.15, "spleen": 0.5}  # dose/GBq at SUV 5
ACTIVITY_MBQ = 7400.0


def prediction_cohort(
    seed: int = 5,
) -> tuple[pa.Table, pa.Table, pa.Table, dict[tuple[str, str, str], float]]:
    """Per site 6 patients with therapy (cycle 1 and 2) and 1 PET-only patient.

    Truth: dose/GBq = organ factor × (SUVmean / 5)^0.9 × lognormal(0.1)."""
    rng = np.random.default_rng(seed)
    features, doses, summaries = [], [], []
    truth: dict[tuple[str, str, str], float] = {}
    for site in SITES:
        for number in range(7):
            subject = f"{site}-s{number}"
            for label, factor in ORGANS.items():
                suv = float(np.exp(rng.normal(1.6, 0.5)))
                per_gbq = factor * (suv / 5.0) ** 0.9 * float(np.exp(rng.normal(0, 0.1)))
                features.append(
                    {
                        "site_id": site,
                        "subject_key": subject,
                        "voi_label": label,
                        "voi_type": "organ",
                        "suv_mean": suv,
                        "suv_max": suv * 1.6,
                        "suv_peak": suv * 1.3,
                        "volume_ml": 150.0,
                    }
                )
                truth[(site, subject, label)] = per_gbq
                if number == 6:
                    continue  # PET only, no therapy yet
                for cycle, scale in ((1, 1.0), (2, 0.5)):  # cycle 2 must be ignored
                    doses.append(
                        {
                            "site_id": site,
                            "subject_key": subject,
                            "cycle_key": f"{subject}-c{cycle}",
                            "voi_label": label,
                            "kinetics_method": REFERENCE,
                            "dose_method": "sphere",
                            "mean_dose_gy": per_gbq * scale * ACTIVITY_MBQ / 1000.0,
                        }
                    )
            if number < 6:
                for cycle in (1, 2):
                    summaries.append(
                        {
                            "cycle_key": f"{subject}-c{cycle}",
                            "cycle_number": cycle,
                            "injected_activity_mbq": ACTIVITY_MBQ,
                            "injected_activity_traceable_mbq": None,
                        }
                    )
    return (
        pa.Table.from_pylist(features),
        pa.Table.from_pylist(doses),
        pa.Table.from_pylist(summaries),
        truth,
    )
