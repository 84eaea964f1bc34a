"""concordose: multicentre harmonisation platform for radioligand-therapy dosimetry.

The library holds all domain logic along the data's path
``dicom → calibration → quant → kinetics → dose → results → report``. It never imports Prefect;
orchestration lives in ``concordose.flows`` and ``concordose.tasks`` (the repository's top-level
``flows/`` and ``tasks/`` folders, symlinked here and installed inside this package).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("concordose")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
