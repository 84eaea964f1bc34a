"""The TLS site rule (issue 18 item 7): a certificate may send as a site only when the
consortium sites it names (CN and DNS SANs) are exactly that site — one test per case."""

from __future__ import annotations

from concordose.ingest.tls import certificate_refusal

SITES = {"milan", "rome", "padua"}


def test_a_certificate_naming_its_own_site_in_the_cn_may_send_as_it() -> None:
    assert certificate_refusal({"milan"}, "milan", SITES) is None


def test_a_certificate_naming_its_site_in_a_san_beside_a_host_name_may_send_as_it() -> None:
    assert certificate_refusal({"gw01.ospedale.example", "milan"}, "milan", SITES) is None


def test_a_cn_naming_another_site_cannot_send_as_this_one() -> None:
    assert certificate_refusal({"rome"}, "milan", SITES) == (
        "its TLS certificate (rome) is not site milan's"
    )


def test_a_san_naming_another_site_cannot_send_as_this_one() -> None:
    reason = certificate_refusal({"gw01.ospedale.example", "rome"}, "milan", SITES)
    assert reason == "its TLS certificate (gw01.ospedale.example, rome) is not site milan's"


def test_a_certificate_naming_two_sites_cannot_send_as_either() -> None:
    for site in ("milan", "rome"):
        assert certificate_refusal({"milan", "rome"}, site, SITES) == (
            "its TLS certificate names more than one site (milan, rome)"
        )


def test_a_certificate_naming_no_site_cannot_send() -> None:
    assert certificate_refusal({"gw01.ospedale.example"}, "milan", SITES) is not None
    assert certificate_refusal(set(), "milan", SITES) == (
        "its TLS certificate (none) is not site milan's"
    )


def test_plain_tcp_and_unknown_ae_titles_are_left_to_the_ae_checks() -> None:
    assert certificate_refusal(None, "milan", SITES) is None
    assert certificate_refusal({"rome"}, None, SITES) is None
