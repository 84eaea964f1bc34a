"""TLS for the storage SCP (DICOM PS3.15 Annex B secure transport connection profile).

Mutual TLS: the receiver presents its certificate, and every sender must present a certificate
signed by the consortium CA (the *site certificates*), whose subject CN (or a DNS name) is the
``site_id`` of ``sites.yaml``. The AE-title check still applies on top: TLS says which site
connects, the AE title which modality at that site sends, and the two must agree (an instance
sent by a calling AE title of another site is refused with 0x0124).
"""

from __future__ import annotations

import ssl
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
