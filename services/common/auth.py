"""Authentication and authorisation of the public RPCs: API keys and HS256 JWT bearer tokens.

Callers send `x-api-key: <key id>.<secret>` or `authorization: Bearer <JWT>`. API keys are kept only as SHA-256
digests of the whole key (keys are 256-bit random strings, so a fast hash is enough: nothing to brute-force) and
compared with `hmac.compare_digest`; an unknown key id costs the same comparison. Tokens are HS256 JWTs whose
`sub` names the caller and whose `scope` (space-separated) or `scp` (list) grants scopes; `exp` is required.

Each public service needs one scope (METHOD_SCOPES); RPCs of other services (the internal ones, health,
reflection) pass through, since mTLS guards those. A refused call gets UNAUTHENTICATED or PERMISSION_DENIED
with a fixed message, and is logged with the caller's key id and the reason, never the secret.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import Counter

from recsys.common import config
from recsys.common.config import ConfigError
from recsys.common.interceptors import wrap_behaviour

log = logging.getLogger("recsys.auth")

SCOPES = ("recommend", "publish_events", "read_monitoring", "write_catalog")
#: The scope each public service requires, by the method-path prefix "/<package>.<Service>/".
METHOD_SCOPES = {
    "/recsys.v1.RecommendService/": "recommend",
    "/recsys.v1.EventService/": "publish_events",
    "/recsys.v1.MonitoringService/": "read_monitoring",
    "/recsys.v1.CatalogService/": "write_catalog",
}
MODES = ("off", "api_key", "jwt", "any")
API_KEY_HEADER = "x-api-key"
AUTHORIZATION_HEADER = "authorization"
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CREDENTIAL_CHARS = 8192
MIN_JWT_SECRET_BYTES = 32

REFUSED = Counter("recsys_auth_refused_total", "Calls refused by authentication / authorisation", ["code", "reason"])

principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("principal", default=None)


def required_scope(method: str) -> str | None:
    """The scope a full method name ("/recsys.v1.RecommendService/Recommend") requires, or None (not public)."""
    for prefix, scope in METHOD_SCOPES.items():
        if method.startswith(prefix):
            return scope
    return None


def current_principal() -> Principal | None:
    """The authenticated caller of the RPC running in this thread (None without authentication)."""
    return principal_var.get()


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its key id (API key id or JWT `sub`), how it authenticated, its scopes, and
    per-key rate limits when its key sets them."""

    key_id: str
    kind: str
    scopes: frozenset[str]
    rate_per_s: float | None = None
    burst: float | None = None


class AuthError(Exception):
    """A refused call. `reason` and `key_id` are for logs and metrics; callers see only `public_message`."""

    code = grpc.StatusCode.UNAUTHENTICATED
    public_message = "missing or invalid credentials"

    def __init__(self, reason: str, key_id: str = "-") -> None:
        super().__init__(reason)
        self.reason = reason
        self.key_id = key_id


class Unauthenticated(AuthError):
    pass


class PermissionDenied(AuthError):
    code = grpc.StatusCode.PERMISSION_DENIED
    public_message = "permission denied"


# --- API keys ----------------------------------------------------------------------------------------------


def digest_key(key: str) -> str:
    """The stored form of an API key: "sha256:<hex of SHA-256 of the whole key>"."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_api_key(key_id: str) -> str:
    """A fresh API key "<key id>.<43 random url-safe characters>"."""
    if not KEY_ID_PATTERN.fullmatch(key_id):
        raise ConfigError(f"key id {key_id!r}: 1-64 letters, digits, '_' or '-'")
    return f"{key_id}.{secrets.token_urlsafe(32)}"


@dataclass(frozen=True)
class ApiKey:
    """One stored key: id, digest, scopes, optional rate limit."""

    key_id: str
    digest: bytes
    scopes: frozenset[str]
    rate_per_s: float | None = None
    burst: float | None = None

    def record(self) -> dict[str, Any]:
        """The JSON record of this key in a keys document."""
        out: dict[str, Any] = {"id": self.key_id, "hash": "sha256:" + self.digest.hex(), "scopes": sorted(self.scopes)}
        if self.rate_per_s is not None:
            out["rate_per_s"] = self.rate_per_s
        if self.burst is not None:
            out["burst"] = self.burst
        return out

    @classmethod
    def for_key(cls, key: str, scopes: Iterable[str], rate_per_s: float | None = None,
                burst: float | None = None) -> ApiKey:
        key_id = key.split(".", 1)[0]
        return cls.parse({"id": key_id, "hash": digest_key(key), "scopes": list(scopes),
                          **({} if rate_per_s is None else {"rate_per_s": rate_per_s}),
                          **({} if burst is None else {"burst": burst})})

    @classmethod
    def parse(cls, record: Any, where: str = "key") -> ApiKey:
        if not isinstance(record, dict):
            raise ConfigError(f"{where}: expected an object")
        key_id = record.get("id")
        if not isinstance(key_id, str) or not KEY_ID_PATTERN.fullmatch(key_id):
            raise ConfigError(f"{where}.id: 1-64 letters, digits, '_' or '-'")
        scheme, _, hexdigest = str(record.get("hash", "")).partition(":")
        if scheme != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
            raise ConfigError(f"{where} {key_id}: hash must be sha256:<64 lowercase hex digits>")
        scopes = record.get("scopes", [])
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(f"{where} {key_id}: scopes must be a list of strings")
        unknown = set(scopes) - set(SCOPES)
        if unknown:
            raise ConfigError(f"{where} {key_id}: unknown scopes {sorted(unknown)} (known: {', '.join(SCOPES)})")
        limits = {}
        for name in ("rate_per_s", "burst"):
            value = record.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value < 0):
                raise ConfigError(f"{where} {key_id}: {name} must be a non-negative number")
            limits[name] = None if value is None else float(value)
        return cls(key_id, bytes.fromhex(hexdigest), frozenset(scopes), limits["rate_per_s"], limits["burst"])


def parse_keys_document(text: str, source: str) -> dict[str, ApiKey]:
    """{key id: ApiKey} from a keys document {"keys": [...]}; ConfigError names the source and the entry."""
    try:
        doc = json.loads(text) if text.strip() else {"keys": []}
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{source}: not JSON ({exc})") from exc
    records = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise ConfigError(f'{source}: expected {{"keys": [...]}}')
    keys: dict[str, ApiKey] = {}
    for i, record in enumerate(records):
        key = ApiKey.parse(record, f"{source} keys[{i}]")
        if key.key_id in keys:
            raise ConfigError(f"{source}: key id {key.key_id} listed twice")
        keys[key.key_id] = key
    return keys


class KeyStore:
    """API keys by id, from a document or a file; a file is re-read (at most every `check_every_s`) when it
    changes, and a broken new version is logged and ignored (the old keys stay)."""

    _DUMMY = hashlib.sha256(b"recsys-unknown-key").digest()

    def __init__(self, keys: dict[str, ApiKey], path: str = "", check_every_s: float = 2.0) -> None:
        self._keys = dict(keys)
        self.path = path
        self.check_every_s = check_every_s
        self._stamp = self._file_stamp() if path else None
        self._next_check = time.monotonic() + check_every_s
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str, check_every_s: float = 2.0) -> KeyStore:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"RECSYS_AUTH_KEYS_FILE: cannot read {path}: {exc.strerror}") from exc
        return cls(parse_keys_document(text, path), path, check_every_s)

    def _file_stamp(self) -> tuple | None:
        try:
            st = os.stat(self.path)
            return (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self.path or now < self._next_check:
            return
        with self._lock:
            if now < self._next_check:
                return
            self._next_check = now + self.check_every_s
            stamp = self._file_stamp()
            if stamp == self._stamp or stamp is None:
                return
            try:
                self._keys = parse_keys_document(Path(self.path).read_text(), self.path)
                log.info("API keys reloaded", extra={"path": self.path, "keys": len(self._keys)})
            except (OSError, ConfigError) as exc:
                log.error("API keys file changed but is invalid; keeping the previous keys",
                          extra={"path": self.path, "error": str(exc)})
            self._stamp = stamp

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, presented: str) -> Principal:
        """The principal of a presented "<id>.<secret>" key; Unauthenticated otherwise (constant-time compare)."""
        self._maybe_reload()
        key_id, dot, secret = presented.partition(".")
        if not dot or not secret or not KEY_ID_PATTERN.fullmatch(key_id) or len(presented) > 256:
            raise Unauthenticated("malformed_key")
        record = self._keys.get(key_id)
        actual = hashlib.sha256(presented.encode("utf-8", errors="replace")).digest()
        matches = hmac.compare_digest(actual, record.digest if record else self._DUMMY)  # same cost either way
        if record is None:
            raise Unauthenticated("unknown_key", key_id)
        if not matches:
            raise Unauthenticated("wrong_secret", key_id)
        return Principal(key_id, "api_key", record.scopes, record.rate_per_s, record.burst)


# --- JWT (HS256) -------------------------------------------------------------------------------------------

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(part: str) -> bytes:
    if not _B64URL.fullmatch(part):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _json_object(part: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64url_decode(part).decode("utf-8"))
    except RecursionError as exc:  # "[[[[..." nested past the interpreter's limit
        raise ValueError("nested too deeply") from exc
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def mint_jwt(
    secret: bytes,
    subject: str,
    scopes: Sequence[str],
    ttl_s: float = 3600.0,
    *,
    issuer: str = "",
    audience: str = "",
    now: float | None = None,
    extra: dict[str, Any] | None = None,
) -> str:
    """An HS256 token for `subject` with `scopes`, valid for ttl_s (for the CLI, tests and demos)."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": subject, "scope": " ".join(scopes), "iat": issued, "exp": issued + int(ttl_s)}
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    claims.update(extra or {})
    header = _b64url_encode(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    payload = _b64url_encode(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(secret, f"{header}.{payload}".encode("ascii"), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64url_encode(signature)}"


@dataclass(frozen=True)
class JwtVerifier:
    """Verifies HS256 tokens: signature first (constant-time), then exp / nbf / iss / aud, then `sub` and scopes."""

    secret: bytes = field(repr=False)
    issuer: str = ""
    audience: str = ""
    leeway_s: float = 30.0

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_JWT_SECRET_BYTES:
            raise ConfigError(f"the JWT secret must be at least {MIN_JWT_SECRET_BYTES} bytes")

    def verify(self, token: str, now: float | None = None) -> Principal:
        if len(token) > MAX_CREDENTIAL_CHARS or token.count(".") != 2:
            raise Unauthenticated("malformed_token")
        header_part, payload_part, signature_part = parts = token.split(".")
        if not all(_B64URL.fullmatch(part) for part in parts):
            raise Unauthenticated("malformed_token")
        try:
            header = _json_object(header_part)
            signature = _b64url_decode(signature_part)
        except (ValueError, UnicodeDecodeError):
            raise Unauthenticated("malformed_token") from None
        if header.get("alg") != "HS256" or "crit" in header:
            raise Unauthenticated("unsupported_alg")
        expected = hmac.new(self.secret, f"{header_part}.{payload_part}".encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            raise Unauthenticated("bad_signature")
        try:
            claims = _json_object(payload_part)
        except (ValueError, UnicodeDecodeError):
            raise Unauthenticated("malformed_token") from None
        subject = claims.get("sub")
        key_id = subject[:128] if isinstance(subject, str) and subject.isprintable() else "-"
        now = time.time() if now is None else now
        exp = claims.get("exp")
        if not _number(exp):
            raise Unauthenticated("missing_exp", key_id)
        if now > exp + self.leeway_s:
            raise Unauthenticated("expired", key_id)
        nbf = claims.get("nbf")
        if nbf is not None and (not _number(nbf) or now + self.leeway_s < nbf):
            raise Unauthenticated("not_yet_valid", key_id)
        if self.issuer and claims.get("iss") != self.issuer:
            raise Unauthenticated("wrong_issuer", key_id)
        if self.audience:
            aud = claims.get("aud")
            if not (aud == self.audience or (isinstance(aud, list) and self.audience in aud)):
                raise Unauthenticated("wrong_audience", key_id)
        if key_id == "-" or not subject:
            raise Unauthenticated("missing_sub")
        return Principal(key_id, "jwt", _claimed_scopes(claims))


def _claimed_scopes(claims: dict[str, Any]) -> frozenset[str]:
    scope, scp = claims.get("scope"), claims.get("scp")
    names: list[str] = []
    if isinstance(scope, str):
        names += scope.split()
    if isinstance(scp, list):
        names += [s for s in scp if isinstance(s, str)]
    return frozenset(names) & frozenset(SCOPES)


# --- the interceptor ---------------------------------------------------------------------------------------


class Authenticator:
    """Checks the credentials in call metadata with the configured methods (API keys and/or JWTs)."""

    def __init__(self, keys: KeyStore | None = None, jwt: JwtVerifier | None = None) -> None:
        if keys is None and jwt is None:
            raise ConfigError("authentication needs API keys or a JWT secret")
        self.keys = keys
        self.jwt = jwt

    @classmethod
    def from_env(cls) -> Authenticator | None:
        """From RECSYS_AUTH_*; None when RECSYS_AUTH_MODE=off (the local default)."""
        mode = config.AUTH_MODE.str().strip().lower() or "off"
        if mode not in MODES:
            raise ConfigError(f"RECSYS_AUTH_MODE={mode!r}: expected one of {', '.join(MODES)}")
        if mode == "off":
            return None
        keys = jwt = None
        if mode in ("api_key", "any"):
            if config.AUTH_KEYS_FILE.str().strip():
                keys = KeyStore.from_file(config.AUTH_KEYS_FILE.str().strip())
            elif config.AUTH_KEYS.str().strip():
                keys = KeyStore(parse_keys_document(config.AUTH_KEYS.str(), "RECSYS_AUTH_KEYS"))
            elif mode == "api_key":
                raise ConfigError("RECSYS_AUTH_MODE=api_key needs RECSYS_AUTH_KEYS_FILE or RECSYS_AUTH_KEYS")
        if mode in ("jwt", "any"):
            secret = _jwt_secret()
            if secret:
                jwt = JwtVerifier(secret, config.AUTH_JWT_ISSUER.str().strip(), config.AUTH_JWT_AUDIENCE.str().strip(),
                                  config.AUTH_JWT_LEEWAY_S.float())
            elif mode == "jwt":
                raise ConfigError("RECSYS_AUTH_MODE=jwt needs RECSYS_AUTH_JWT_SECRET or RECSYS_AUTH_JWT_SECRET_FILE")
        if keys is None and jwt is None:
            raise ConfigError("RECSYS_AUTH_MODE=any needs API keys or a JWT secret")
        return cls(keys, jwt)

    def authenticate(self, metadata: Iterable[tuple[str, Any]] | None) -> Principal:
        """The caller named by the metadata; Unauthenticated when there is no valid credential."""
        api_key = bearer = None
        for key, value in metadata or ():
            if not isinstance(value, str):
                continue
            if key == API_KEY_HEADER and api_key is None:
                api_key = value.strip()
            elif key == AUTHORIZATION_HEADER and bearer is None:
                scheme, _, credential = value.strip().partition(" ")
                if scheme.lower() != "bearer" or not credential.strip():
                    raise Unauthenticated("malformed_authorization")
                bearer = credential.strip()
        if bearer is not None:
            if self.jwt is None:
                raise Unauthenticated("jwt_not_accepted")
            return self.jwt.verify(bearer)
        if api_key is not None:
            if self.keys is None:
                raise Unauthenticated("api_key_not_accepted")
            return self.keys.verify(api_key)
        raise Unauthenticated("missing_credentials")

    def check(self, metadata: Iterable[tuple[str, Any]] | None, scope: str) -> Principal:
        """authenticate, then PermissionDenied unless the caller holds `scope`."""
        principal = self.authenticate(metadata)
        if scope not in principal.scopes:
            raise PermissionDenied("missing_scope", principal.key_id)
        return principal


def _jwt_secret() -> bytes:
    path = config.AUTH_JWT_SECRET_FILE.str().strip()
    if path:
        try:
            return Path(path).read_bytes().strip()
        except OSError as exc:
            raise ConfigError(f"RECSYS_AUTH_JWT_SECRET_FILE: cannot read {path}: {exc.strerror}") from exc
    return config.AUTH_JWT_SECRET.str().encode("utf-8")


class AuthInterceptor(grpc.ServerInterceptor):
    """Runs `Authenticator.check` before every method of the public services (METHOD_SCOPES); the principal is
    available to the servicer and inner interceptors through `current_principal()`."""

    def __init__(self, authenticator: Authenticator, scopes_of: Callable[[str], str | None] = required_scope) -> None:
        self.authenticator = authenticator
        self.scopes_of = scopes_of

    def intercept_service(self, continuation: Callable, handler_call_details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(handler_call_details)
        scope = self.scopes_of(handler_call_details.method)
        if handler is None or scope is None:
            return handler
        method = handler_call_details.method

        def around(inner: Callable, request: Any, context: grpc.ServicerContext) -> Any:
            try:
                principal = self.authenticator.check(context.invocation_metadata(), scope)
            except AuthError as exc:
                REFUSED.labels(exc.code.name, exc.reason).inc()
                log.warning("call refused", extra={"method": method, "code": exc.code.name, "reason": exc.reason,
                                                    "key_id": exc.key_id, "peer": context.peer()})
                context.abort(exc.code, exc.public_message)
            token = principal_var.set(principal)
            try:
                return inner(request, context)
            finally:
                principal_var.reset(token)

        return wrap_behaviour(handler, around)
