"""Reports people read: the per-cycle report (issue 17), self-contained HTML from the
published tables and the cycle's image products."""

from concordose.report.cycle_report import (
    SECTION_IDS,
    build_cycle_report,
    cycle_report_key,
    publish_cycle_report,
    render_cycle_report,
)
from concordose.report.cycle_tables import CycleRows, published_cycle_keys, read_cycle_rows
from concordose.report.images import (
    CYCLE_REPORTS_DIR,
    CycleImages,
    cycle_images,
    image_products_key,
    publish_cycle_images,
    read_cycle_images,
    write_cycle_images,
)
from concordose.report.palette import METHOD_STYLES, MethodStyle, method_style

__all__ = [
    "CYCLE_REPORTS_DIR",
    "METHOD_STYLES",
    "SECTION_IDS",
    "CycleImages",
    "CycleRows",
    "MethodStyle",
    "build_cycle_report",
    "cycle_images",
    "cycle_report_key",
    "image_products_key",
    "method_style",
    "publish_cycle_images",
    "publish_cycle_report",
    "published_cycle_keys",
    "read_cycle_images",
    "read_cycle_rows",
    "render_cycle_report",
    "write_cycle_images",
]
