"""Reports people read (issue 17): the per-cycle report and the consortium dashboard,
self-contained HTML from the published tables (and a cycle's image products)."""

from concordose.report.cycle_report import (
    SECTION_IDS,
    build_cycle_report,
    cycle_report_key,
    publish_cycle_report,
    render_cycle_report,
)
from concordose.report.cycle_tables import CycleRows, published_cycle_keys, read_cycle_rows
from concordose.report.dashboard import (
    DASHBOARD_KEY,
    DASHBOARD_SECTION_IDS,
    build_dashboard,
    publish_dashboard,
    render_dashboard,
)
from concordose.report.dashboard_tables import DashboardTables, read_dashboard_tables
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
    "DASHBOARD_KEY",
    "DASHBOARD_SECTION_IDS",
    "METHOD_STYLES",
    "SECTION_IDS",
    "CycleImages",
    "CycleRows",
    "DashboardTables",
    "MethodStyle",
    "build_cycle_report",
    "build_dashboard",
    "cycle_images",
    "cycle_report_key",
    "image_products_key",
    "method_style",
    "publish_cycle_images",
    "publish_cycle_report",
    "publish_dashboard",
    "published_cycle_keys",
    "read_cycle_images",
    "read_cycle_rows",
    "read_dashboard_tables",
    "render_cycle_report",
    "render_dashboard",
    "write_cycle_images",
]
