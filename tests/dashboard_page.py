"""The consortium dashboard's HTML parsed for tests: section ids, every src/href, and each
numeric cell (``<td data-value=…>``) with its table's class and its row's ``data-*`` attributes."""

from __future__ import annotations

from html.parser import HTMLParser


class DashboardPage(HTMLParser):
    """Feed it the page (:func:`parse_dashboard`); read ``ids``, ``references``, ``cells``."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.references: list[str] = []
        self.cells: list[dict[str, str]] = []
        self._table = ""
        self._row: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        if "id" in attributes:
            self.ids.add(attributes["id"])
        self.references += [attributes[k] for k in ("src", "href") if k in attributes]
        if tag == "table":
            self._table = attributes.get("class", "")
        elif tag == "tr":
            self._row = {k: v for k, v in attributes.items() if k.startswith("data-")}
        elif tag == "td" and "data-value" in attributes:
            self.cells.append({"table": self._table, **self._row, **attributes})

    def table(self, name: str, css: str) -> list[dict[str, str]]:
        """The numeric cells of table ``name`` whose class includes ``css``."""
        return [c for c in self.cells if c["table"] == name and css in c["class"].split()]


def parse_dashboard(html: str) -> DashboardPage:
    """The page parsed."""
    page = DashboardPage()
    page.feed(html)
    return page
