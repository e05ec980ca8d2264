"""TLS credentials for the server and the clients, from PEM files.

The server always presents its certificate; with ``require_client_auth`` (mutual TLS) it
also demands a client certificate signed by the run's CA, and reads the caller's identity
from the verified certificate's common name (:func:`peer_identity`).
"""

from __future__ import annotations

from pathlib import Path

import grpc

__all__ = ["channel_credentials", "peer_identity", "server_credentials"]


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise FileNotFoundError(
            f"cannot read the {what} at {path}: {exc.strerror}; create quick-start files "
            "with `fedloom certs --out DIR --clients ID,...`"
        ) from None


def server_credentials(
    certificate: str | Path,
    key: str | Path,
    ca: str | Path,
    *,
    require_client_auth: bool = True,
) -> grpc.ServerCredentials:
    """The server's TLS credentials (mutual TLS unless ``require_client_auth`` is off)."""
    return grpc.ssl_server_credentials(
        [(_read(key, "server key"), _read(certificate, "server certificate"))],
        root_certificates=_read(ca, "CA certificate"),
        require_client_auth=require_client_auth,
    )


def channel_credentials(
    ca: str | Path, certificate: str | Path | None = None, key: str | Path | None = None
) -> grpc.ChannelCredentials:
    """A client's credentials: trust the run's CA; present a client certificate if given."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca, "CA certificate"),
        private_key=_read(key, "client key") if key else None,
        certificate_chain=_read(certificate, "client certificate") if certificate else None,
    )


def peer_identity(context: grpc.ServicerContext) -> str | None:
    """The common name of the caller's verified client certificate, if it presented one."""
    auth = context.auth_context()
    names = auth.get("x509_common_name") or []
    return names[0].decode() if names else None
