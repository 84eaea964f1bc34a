"""The external-reference scanner (issue 17): every way an HTML or CSS file can make a browser
fetch (or link to) something off the machine, and nothing local."""

from __future__ import annotations

from pathlib import Path

from concordose.external_references import external_references, is_external_url

PAGE = """<!DOCTYPE html>
<html><head>
<link rel="stylesheet" href="https://cdn.example/a.css">
<script src="//cdn.example/b.js"></script>
<meta http-equiv="refresh" content="5; url=http://elsewhere.example/">
<style>
@import "https://fonts.example/c.css";
.logo { background: url('https://img.example/d.png') }
.local { background: url("data:image/svg+xml,%3csvg xmlns='http://www.w3.org/2000/svg'/%3e") }
.rel { background: url(../static/e.png) }
</style>
</head><body>
<img srcset="local.png 1x, https://img.example/f.png 2x" src="local.png">
<div style="background-image: url(https://img.example/g.png)"></div>
<a href="https://docs.example/h">docs</a>
<a href="#top">top</a> <a href="other.html">other</a>
<svg xmlns="http://www.w3.org/2000/svg"><image xlink:href="https://img.example/i.svg"/></svg>
<p>text mentioning https://not.a.reference/</p>
<script>var u = "https://in.a.script/";</script>
</body></html>
"""


def test_every_kind_of_external_reference_is_found_and_nothing_local(tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_text(PAGE)
    found = [(r.where, r.url) for r in external_references(page)]
    assert found == [
        ("<link href>", "https://cdn.example/a.css"),
        ("<script src>", "//cdn.example/b.js"),
        ("<meta refresh>", "http://elsewhere.example/"),
        ("<style> @import", "https://fonts.example/c.css"),
        ("<style> url()", "https://img.example/d.png"),
        ("<img srcset>", "https://img.example/f.png"),
        ("<div style> url()", "https://img.example/g.png"),
        ("<a href>", "https://docs.example/h"),
        ("<image xlink:href>", "https://img.example/i.svg"),
    ]
    assert {r.line for r in external_references(page)} >= {3, 4, 15}


def test_a_stylesheet_is_scanned_as_css(tmp_path: Path) -> None:
    css = tmp_path / "all.css"
    css.write_text(
        '@import url("//fonts.example/x.css");\n'
        "@font-face { src: url(../webfonts/fa.woff2) format('woff2'),"
        " url(https://cdn.example/fa.ttf) }\n"
    )
    assert [r.url for r in external_references(css)] == [
        "//fonts.example/x.css",
        "https://cdn.example/fa.ttf",
    ]


def test_what_counts_as_external() -> None:
    assert is_external_url("https://a/b")
    assert is_external_url(" HTTP://a")
    assert is_external_url("//a/b")
    assert is_external_url("file:///etc/passwd")
    for local in ("a/b.png", "../x.css", "#id", "data:text/plain,http://x", "", "/abs/path"):
        assert not is_external_url(local), local
