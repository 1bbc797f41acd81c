"""TLS and mutual TLS for the gRPC servers and clients, from the RECSYS_TLS_* variables.

Plaintext unless RECSYS_TLS_CERT and RECSYS_TLS_KEY (a server) or RECSYS_TLS_CA / RECSYS_TLS_CERT (a client)
are set. With RECSYS_TLS_CLIENT_AUTH=require a server refuses, during the handshake, every peer without a
certificate signed by RECSYS_TLS_CA: that is how internal services accept only mTLS peers. A server re-reads its
certificate files when they change (cert-manager rotates them in place), at the next handshake.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from recsys.common import config
from recsys.common.config import ConfigError

log = logging.getLogger("recsys.tls")

CLIENT_AUTH_MODES = {"none": False, "false": False, "off": False, "require": True, "true": True, "on": True}


def read_pem(path: str, what: str) -> bytes:
    """The bytes of a PEM file, or ConfigError naming the setting."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{what}: {path} is not a PEM file")
    return data


@dataclass(frozen=True)
class TlsConfig:
    """Certificate, key and CA paths plus the client-certificate policy of one process."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""
    require_client_cert: bool = False
    server_name: str = ""
    plaintext_targets: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def from_env(cls) -> TlsConfig:
        """Read RECSYS_TLS_*; raises ConfigError for a half-made configuration."""
        mode = config.TLS_CLIENT_AUTH.str().strip().lower() or "none"
        if mode not in CLIENT_AUTH_MODES:
            raise ConfigError(f"RECSYS_TLS_CLIENT_AUTH={mode!r}: expected none or require")
        tls = cls(
            cert_file=config.TLS_CERT.str().strip(),
            key_file=config.TLS_KEY.str().strip(),
            ca_file=config.TLS_CA.str().strip(),
            require_client_cert=CLIENT_AUTH_MODES[mode],
            server_name=config.TLS_SERVER_NAME.str().strip(),
            plaintext_targets=frozenset(config.TLS_PLAINTEXT_TARGETS.list()),
        )
        tls.validate()
        return tls

    def validate(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("RECSYS_TLS_CERT and RECSYS_TLS_KEY must be set together")
        if self.require_client_cert and not (self.server_enabled and self.ca_file):
            raise ConfigError("RECSYS_TLS_CLIENT_AUTH=require needs RECSYS_TLS_CERT, RECSYS_TLS_KEY and RECSYS_TLS_CA")

    @property
    def server_enabled(self) -> bool:
        """True when servers listen with TLS."""
        return bool(self.cert_file and self.key_file)

    @property
    def client_enabled(self) -> bool:
        """True when clients call with TLS (a CA to trust, or a certificate to present)."""
        return bool(self.ca_file or self.cert_file)

    def uses_tls_for(self, target: str) -> bool:
        return self.client_enabled and target not in self.plaintext_targets

    def _key_pair(self) -> tuple[bytes, bytes]:
        return read_pem(self.key_file, "RECSYS_TLS_KEY"), read_pem(self.cert_file, "RECSYS_TLS_CERT")

    def _server_configuration(self) -> grpc.ServerCertificateConfiguration:
        roots = read_pem(self.ca_file, "RECSYS_TLS_CA") if self.ca_file else None
        return grpc.ssl_server_certificate_configuration([self._key_pair()], root_certificates=roots)

    def server_credentials(self) -> grpc.ServerCredentials:
        """Server credentials that reload the files when their modification times change."""
        if not self.server_enabled:
            raise ConfigError("server TLS needs RECSYS_TLS_CERT and RECSYS_TLS_KEY")
        reloader = _Reloader(self)
        return grpc.dynamic_ssl_server_credentials(
            reloader.initial, reloader.fetch, require_client_authentication=self.require_client_cert
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Client credentials: trust RECSYS_TLS_CA (or the system roots), present RECSYS_TLS_CERT if set."""
        roots = read_pem(self.ca_file, "RECSYS_TLS_CA") if self.ca_file else None
        key, chain = self._key_pair() if self.cert_file else (None, None)
        return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


class _Reloader:
    """The certificate-configuration fetcher of dynamic server credentials: gRPC calls it before each
    handshake; it answers a new configuration only when a file changed (a few stat calls otherwise)."""

    def __init__(self, tls: TlsConfig) -> None:
        self.tls = tls
        self._lock = threading.Lock()
        self._stamp = self._stamps()
        self.initial = tls._server_configuration()

    def _stamps(self) -> tuple:
        paths = [p for p in (self.tls.cert_file, self.tls.key_file, self.tls.ca_file) if p]
        out = []
        for path in paths:
            try:
                st = os.stat(path)
                out.append((path, st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                out.append((path, None, None, None))
        return tuple(out)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        with self._lock:
            stamp = self._stamps()
            if stamp == self._stamp:
                return None
            try:
                configuration = self.tls._server_configuration()
            except ConfigError as exc:  # half-written during a rotation: keep serving the old pair
                log.warning("TLS files changed but cannot be loaded yet", extra={"error": str(exc)})
                return None
            self._stamp = stamp
            log.info("TLS certificate reloaded", extra={"cert": self.tls.cert_file})
            return configuration
