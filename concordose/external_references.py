"""External references of an HTML (or CSS) file: what a browser would fetch from the network.

The reports and Data Docs must render on closed hospital networks, so every asset they load must
be inline or beside them. :func:`external_references` lists what is not: each ``http://``,
``https://`` or protocol-relative (``//host/…``) URL found where a browser fetches or navigates
to it:

- HTML attributes that name a URL (``src``, ``href``, ``srcset``, ``poster``, ``data``,
  ``action``, ``formaction``, ``background``, ``xlink:href``, ``manifest``, ``icon``) on any
  element, hyperlinks (``<a href>``) included: a link out of a closed network is dead, so none is
  allowed (decided for issue 17; :mod:`concordose.results.data_docs` unlinks Great Expectations'
  links to its website and documentation);
- ``<meta http-equiv="refresh" content="…; url=…">``;
- CSS, parsed with tinycss2: ``url(…)`` and ``@import`` in ``<style>`` elements, in ``style``
  attributes and, for a ``.css`` file, in the file itself.

``data:`` URLs, fragments (``#id``) and relative paths are local. URLs inside scripts are not
looked for (a script's requests are what the headless-browser test catches); neither is text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import tinycss2

URL_ATTRIBUTES = frozenset(
    {
        "src",
        "href",
        "srcset",
        "poster",
        "data",
        "action",
        "formaction",
        "background",
        "xlink:href",
        "manifest",
        "icon",
    }
)
_EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.IGNORECASE)
_REFRESH_URL = re.compile(r"url\s*=\s*['\"]?([^'\";]+)", re.IGNORECASE)


@dataclass(frozen=True)
class ExternalReference:
    """One URL a page would fetch (or link to) outside itself.

    Attributes:
        url: the URL as written.
        where: what refers to it, e.g. ``<script src>``, ``<style> url()``, ``@import``.
        line: 1-based line of the file where the referring tag or stylesheet starts.
    """

    url: str
    where: str
    line: int


def is_external_url(url: str) -> bool:
    """True for a URL that leaves the file's folder: ``scheme://…`` or ``//host/…``.

    ``data:`` URLs, relative paths and fragments are local. ``file://`` counts as external
    too: a published page must not point into the machine that built it.
    """
    return bool(_EXTERNAL.match(url))


def _css_nodes(nodes: Iterable[Any]) -> Iterator[Any]:
    """Every tinycss2 node of ``nodes``, depth first (rules, blocks, declarations, arguments)."""
    for node in nodes:
        yield node
        for child in ("prelude", "content", "arguments", "value"):
            inner = getattr(node, child, None)
            if isinstance(inner, list):
                yield from _css_nodes(inner)


def _css_urls(nodes: Iterable[Any]) -> Iterator[tuple[str, str]]:
    """(kind, url) of every ``url()`` and ``@import`` among ``nodes``."""
    for node in _css_nodes(nodes):
        if node.type == "url":
            yield "url()", str(node.value)
        elif node.type == "function" and node.lower_name == "url":
            for argument in node.arguments:
                if argument.type == "string":
                    yield "url()", str(argument.value)
        elif node.type == "at-rule" and node.lower_at_keyword == "import":
            for token in node.prelude:
                if token.type == "string":
                    yield "@import", str(token.value)


def css_urls(css: str, *, declarations: bool = False) -> list[tuple[str, str]]:
    """(kind, url) of every ``url()`` and ``@import`` in CSS text, external or not.

    Args:
        css: a stylesheet, or with ``declarations`` the contents of a ``style`` attribute.
        declarations: parse ``css`` as a declaration list instead of a stylesheet.
    """
    parse = tinycss2.parse_blocks_contents if declarations else tinycss2.parse_stylesheet
    return list(_css_urls(parse(css, skip_comments=True)))


class _ReferenceParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[ExternalReference] = []
        self._style: list[str] | None = None
        self._style_line = 0

    def _add(self, url: str, where: str, line: int) -> None:
        if is_external_url(url):
            self.found.append(ExternalReference(url.strip(), where, line))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        line = self.getpos()[0]
        attributes = {name.lower(): value or "" for name, value in attrs}
        for name, value in attributes.items():
            if name == "srcset":
                for candidate in value.split(","):
                    self._add(candidate.strip().split(" ")[0], f"<{tag} srcset>", line)
            elif name in URL_ATTRIBUTES:
                self._add(value, f"<{tag} {name}>", line)
        if attributes.get("http-equiv", "").lower() == "refresh":
            match = _REFRESH_URL.search(attributes.get("content", ""))
            if match:
                self._add(match.group(1), "<meta refresh>", line)
        if "style" in attributes:
            for kind, url in css_urls(attributes["style"], declarations=True):
                self._add(url, f"<{tag} style> {kind}", line)
        if tag == "style":
            self._style, self._style_line = [], line

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag == "style":
            self.handle_endtag(tag)

    def handle_data(self, data: str) -> None:
        if self._style is not None:
            self._style.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "style" and self._style is not None:
            for kind, url in css_urls("".join(self._style)):
                self._add(url, f"<style> {kind}", self._style_line)
            self._style = None


def external_references(path: Path) -> list[ExternalReference]:
    """Every external URL the HTML file ``path`` (or a ``.css`` file) refers to, in order.

    Raises:
        OSError: the file cannot be read.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".css":
        return [
            ExternalReference(url.strip(), kind, 1)
            for kind, url in css_urls(text)
            if is_external_url(url)
        ]
    parser = _ReferenceParser()
    parser.feed(text)
    parser.close()
    return parser.found
