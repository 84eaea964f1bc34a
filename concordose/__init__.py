"""concordose: multicentre harmonisation platform for radioligand-therapy dosimetry.

The library holds all domain logic along the data's path
``dicom → calibration → quant → kinetics → dose → results → report``. It never imports Prefect;
orchestration lives in the top-level ``flows`` and ``tasks`` packages.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("concordose")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
