"""TLS for the storage SCP (DICOM PS3.15 Annex B secure transport connection profile).

Mutual TLS: the receiver presents its certificate, and every sender must present a certificate
signed by the consortium CA (the *site certificates*), whose subject CN (or a DNS name) is the
``site_id`` of ``sites.yaml``. The AE-title check still applies on top: TLS says which site
connects, the AE title which modality at that site sends, and the two must agree (an instance
sent by a calling AE title of another site is refused with 0x0124).

The rule (:func:`certificate_refusal`): a certificate may send as site S only when the consortium
sites it names — its subject CN and its DNS subject-alternative names, compared with every
``site_id`` the receiver knows — are exactly {S}. So a certificate naming another site (in its CN
or in a SAN) cannot send as S, and neither can one naming S and another site (it would let one
institution's key speak for two). Names that are no site (a host name beside the site id) are
ignored.
"""

from __future__ import annotations

import ssl
from collections.abc import Collection
from pathlib import Path

from concordose.errors import ConfigurationError


def server_context(
    cert_file: Path, key_file: Path, ca_file: Path, *, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A server-side TLS context (TLS ≥ 1.2) for :class:`~.receiver.StorageReceiver`.

    Args:
        cert_file, key_file: the receiver's certificate and private key (PEM).
        ca_file: the CA bundle (PEM) that site certificates must chain to.
        require_client_cert: refuse senders without a valid site certificate (mutual TLS).

    Raises:
        ConfigurationError: a file is missing or not a usable PEM certificate/key.
    """
    for label, path in (("certificate", cert_file), ("key", key_file), ("CA", ca_file)):
        if not path.is_file():
            raise ConfigurationError(f"TLS {label} file {path} does not exist")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile=cert_file, keyfile=key_file)
        context.load_verify_locations(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigurationError(
            f"TLS files {cert_file}, {key_file}, {ca_file} are not a usable PEM certificate, "
            f"key and CA: {exc}"
        ) from exc
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def certificate_refusal(
    certificate_names: set[str] | None, site_id: str | None, site_ids: Collection[str]
) -> str | None:
    """Why a TLS peer whose certificate names ``certificate_names`` may not send as ``site_id``;
    None when it may (module docstring, the rule).

    Args:
        certificate_names: subject CN and DNS names of the peer's certificate; None on plain TCP
            (no TLS: the AE-title checks alone apply).
        site_id: the site the calling AE title belongs to; None when the AE title is no site's
            (the receiver's admission refuses those when it knows its sites).
        site_ids: every site the receiver knows.
    """
    if certificate_names is None or site_id is None:
        return None
    named = sorted(certificate_names & {*site_ids, site_id})
    if named == [site_id]:
        return None
    if site_id in named:
        return f"its TLS certificate names more than one site ({', '.join(named)})"
    shown = ", ".join(sorted(certificate_names)) or "none"
    return f"its TLS certificate ({shown}) is not site {site_id}'s"
