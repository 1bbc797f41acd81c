"""Security building blocks without servers: API keys, JWT verification, rate-limit buckets, TLS and Kafka
security settings from the environment."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import grpc
import jwt as pyjwt
import pytest

from recsys.common import kafka
from recsys.common.auth import (
    ApiKey,
    Authenticator,
    JwtVerifier,
    KeyStore,
    PermissionDenied,
    Unauthenticated,
    digest_key,
    mint_jwt,
    new_api_key,
    parse_keys_document,
    required_scope,
)
from recsys.common.config import ConfigError
from recsys.common.ratelimit import KeyedRateLimiter
from recsys.common.tls import TlsConfig

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def test_required_scopes_cover_the_public_surface_only():
    assert required_scope("/recsys.v1.RecommendService/Recommend") == "recommend"
    assert required_scope("/recsys.v1.EventService/Publish") == "publish_events"
    assert required_scope("/recsys.v1.MonitoringService/GetDriftReport") == "read_monitoring"
    for internal in ("/recsys.v1.FeatureService/GetUserFeatures", "/grpc.health.v1.Health/Check",
                     "/recsys.v1.RankingService/Rank", "/recsys.v1.RecommendServiceX/Recommend"):
        assert required_scope(internal) is None


def test_api_keys_are_stored_hashed_and_checked():
    key = new_api_key("shop")
    assert key.startswith("shop.") and len(key) > 40
    record = ApiKey.for_key(key, ["recommend"], rate_per_s=5).record()
    assert record["hash"] == digest_key(key) and key.split(".")[1] not in json.dumps(record)
    store = KeyStore(parse_keys_document(json.dumps({"keys": [record]}), "test"))
    principal = store.verify(key)
    assert (principal.key_id, principal.scopes, principal.rate_per_s) == ("shop", frozenset({"recommend"}), 5.0)
    for presented, reason in [(key + "x", "wrong_secret"), ("other." + key.split(".")[1], "unknown_key"),
                              ("shop", "malformed_key"), ("sh op.x", "malformed_key"), ("", "malformed_key")]:
        with pytest.raises(Unauthenticated) as refused:
            store.verify(presented)
        assert refused.value.reason == reason


@pytest.mark.parametrize("document, message", [
    ("{", "not JSON"),
    ('{"keys": {}}', "expected"),
    ('{"keys": [{"id": "a b", "hash": "sha256:' + "0" * 64 + '"}]}', "id"),
    ('{"keys": [{"id": "a", "hash": "md5:abc"}]}', "hash must be"),
    ('{"keys": [{"id": "a", "hash": "sha256:' + "0" * 64 + '", "scopes": ["admin"]}]}', "unknown scopes"),
    ('{"keys": [{"id": "a", "hash": "sha256:' + "0" * 64 + '", "rate_per_s": -1}]}', "non-negative"),
    ('{"keys": [{"id": "a", "hash": "sha256:' + "0" * 64 + '"}, {"id": "a", "hash": "sha256:' + "1" * 64 + '"}]}',
     "twice"),
])
def test_bad_keys_documents_are_refused_with_the_entry(document, message):
    with pytest.raises(ConfigError, match=message):
        parse_keys_document(document, "keys.json")


def test_keys_file_is_reloaded_when_it_changes(tmp_path):
    first, second = new_api_key("one"), new_api_key("two")
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"keys": [ApiKey.for_key(first, ["recommend"]).record()]}))
    store = KeyStore.from_file(str(path), check_every_s=0)
    assert store.verify(first).key_id == "one"
    path.write_text(json.dumps({"keys": [ApiKey.for_key(second, ["recommend"]).record()]}))
    assert store.verify(second).key_id == "two"
    with pytest.raises(Unauthenticated):
        store.verify(first)
    path.write_text("{broken")  # a bad edit keeps the previous keys
    assert store.verify(second).key_id == "two"


def test_jwt_tokens_verify_and_interoperate_with_pyjwt():
    verifier = JwtVerifier(SECRET, issuer="idp", audience="recsys")
    ours = mint_jwt(SECRET, "app-1", ["recommend", "admin"], 60, issuer="idp", audience="recsys", now=NOW)
    principal = verifier.verify(ours, now=NOW + 30)
    assert (principal.key_id, principal.kind, principal.scopes) == ("app-1", "jwt", frozenset({"recommend"}))
    relaxed = {"verify_exp": False, "verify_iat": False}  # NOW is in the future
    assert pyjwt.decode(ours, SECRET, algorithms=["HS256"], audience="recsys", options=relaxed)["sub"] == "app-1"
    theirs = pyjwt.encode({"sub": "app-2", "scp": ["publish_events"], "exp": NOW + 60, "iss": "idp",
                           "aud": ["x", "recsys"]}, SECRET, algorithm="HS256")
    assert verifier.verify(theirs, now=NOW).scopes == frozenset({"publish_events"})


def signed(header: bytes, payload: bytes, secret: bytes = SECRET) -> str:
    """A correctly signed HS256 token over arbitrary header and payload bytes."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = f"{b64(header)}.{b64(payload)}"
    return f"{body}.{b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())}"


@pytest.mark.parametrize("case, reason", [
    ("expired", "expired"),
    ("not yet valid", "not_yet_valid"),
    ("no exp", "missing_exp"),
    ("no sub", "missing_sub"),
    ("wrong issuer", "wrong_issuer"),
    ("wrong audience", "wrong_audience"),
    ("wrong key", "bad_signature"),
    ("alg none", "unsupported_alg"),
    ("alg HS512", "unsupported_alg"),
    ("two parts", "malformed_token"),
    ("bad base64", "malformed_token"),
    ("payload not an object", "malformed_token"),
])
def test_bad_tokens_are_refused_with_a_reason(case, reason):
    verifier = JwtVerifier(SECRET, issuer="idp", audience="recsys")
    good = {"sub": "app", "scope": "recommend", "exp": NOW + 60, "iss": "idp", "aud": "recsys"}
    claims = {
        "expired": {**good, "exp": NOW - 31}, "not yet valid": {**good, "nbf": NOW + 31},
        "no exp": {k: v for k, v in good.items() if k != "exp"}, "no sub": {**good, "sub": ""},
        "wrong issuer": {**good, "iss": "other"}, "wrong audience": {**good, "aud": "other"},
    }.get(case, good)
    token = pyjwt.encode(claims, SECRET, algorithm="HS256")
    if case == "wrong key":
        token = pyjwt.encode(claims, b"k" * 32, algorithm="HS256")
    elif case == "alg none":
        token = pyjwt.encode(claims, None, algorithm="none")
    elif case == "alg HS512":
        token = pyjwt.encode(claims, SECRET * 2, algorithm="HS512")
    elif case == "two parts":
        token = token.rsplit(".", 1)[0]
    elif case == "bad base64":
        token = "e30.e30.@@@"
    elif case == "payload not an object":
        token = signed(b'{"alg":"HS256"}', b"[1]")
    with pytest.raises(Unauthenticated) as refused:
        verifier.verify(token, now=NOW)
    assert refused.value.reason == reason


def test_short_jwt_secrets_are_refused():
    with pytest.raises(ConfigError, match="32 bytes"):
        JwtVerifier(b"short")


def test_authenticator_reads_headers_and_checks_scopes():
    key = new_api_key("shop")
    auth = Authenticator(KeyStore({"shop": ApiKey.for_key(key, ["recommend"])}), JwtVerifier(SECRET))
    assert auth.check([("x-api-key", key)], "recommend").key_id == "shop"
    bearer = mint_jwt(SECRET, "partner", ["publish_events"], 60)
    assert auth.check([("authorization", f"Bearer {bearer}")], "publish_events").key_id == "partner"
    with pytest.raises(PermissionDenied) as denied:
        auth.check([("x-api-key", key)], "read_monitoring")
    assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED and denied.value.key_id == "shop"
    with pytest.raises(Unauthenticated, match="missing_credentials"):
        auth.check([("x-request-id", "r1")], "recommend")
    with pytest.raises(Unauthenticated, match="jwt_not_accepted"):
        Authenticator(keys=KeyStore({})).check([("authorization", f"Bearer {bearer}")], "recommend")


def test_auth_settings_from_the_environment(monkeypatch, tmp_path):
    assert Authenticator.from_env() is None  # off by default
    monkeypatch.setenv("RECSYS_AUTH_MODE", "api_key")
    with pytest.raises(ConfigError, match="RECSYS_AUTH_KEYS"):
        Authenticator.from_env()
    keys = tmp_path / "keys.json"
    keys.write_text('{"keys": []}')
    monkeypatch.setenv("RECSYS_AUTH_KEYS_FILE", str(keys))
    assert Authenticator.from_env().jwt is None
    monkeypatch.setenv("RECSYS_AUTH_MODE", "jwt")
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Authenticator.from_env()
    secret = tmp_path / "jwt"
    secret.write_text("z" * 40 + "\n")
    monkeypatch.setenv("RECSYS_AUTH_JWT_SECRET_FILE", str(secret))
    assert Authenticator.from_env().jwt.secret == b"z" * 40
    monkeypatch.setenv("RECSYS_AUTH_MODE", "maybe")
    with pytest.raises(ConfigError, match="RECSYS_AUTH_MODE"):
        Authenticator.from_env()


def test_token_buckets_per_key_with_overrides():
    now = [0.0]
    limiter = KeyedRateLimiter(2.0, burst=4, max_keys=2, clock=lambda: now[0])
    assert [limiter.acquire("a") for _ in range(4)] == [0.0] * 4
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("b", rate_per_s=1.0, burst=1.0) == 0.0
    assert limiter.acquire("b", rate_per_s=1.0, burst=1.0) == pytest.approx(1.0)
    assert limiter.acquire("c", rate_per_s=0.0) == 0.0  # a key without limit
    limiter.acquire("d")
    assert len(limiter._buckets) == 2  # least recently used dropped


def test_rate_limit_from_the_environment(monkeypatch):
    assert KeyedRateLimiter.from_env() is None
    monkeypatch.setenv("RECSYS_GATEWAY_RATE_LIMIT_RPS", "50")
    limiter = KeyedRateLimiter.from_env()
    assert (limiter.rate, limiter.burst) == (50.0, 50.0)


def test_tls_settings_from_the_environment(monkeypatch):
    tls = TlsConfig.from_env()
    assert not tls.server_enabled and not tls.client_enabled  # plaintext by default
    monkeypatch.setenv("RECSYS_TLS_CERT", "/certs/tls.crt")
    with pytest.raises(ConfigError, match="together"):
        TlsConfig.from_env()
    monkeypatch.setenv("RECSYS_TLS_KEY", "/certs/tls.key")
    monkeypatch.setenv("RECSYS_TLS_CLIENT_AUTH", "require")
    with pytest.raises(ConfigError, match="RECSYS_TLS_CA"):
        TlsConfig.from_env()
    monkeypatch.setenv("RECSYS_TLS_CA", "/certs/ca.crt")
    monkeypatch.setenv("RECSYS_TLS_PLAINTEXT_TARGETS", "ranking:50054")
    tls = TlsConfig.from_env()
    assert tls.require_client_cert and tls.uses_tls_for("features:50052") and not tls.uses_tls_for("ranking:50054")
    monkeypatch.setenv("RECSYS_TLS_CLIENT_AUTH", "sometimes")
    with pytest.raises(ConfigError, match="none or require"):
        TlsConfig.from_env()
    with pytest.raises(ConfigError, match="cannot read"):
        TlsConfig(ca_file="/nonexistent/ca.crt").channel_credentials()


def test_kafka_security_settings(monkeypatch):
    assert kafka.security_config() == {"security_protocol": "PLAINTEXT"}
    monkeypatch.setenv("RECSYS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    with pytest.raises(ConfigError, match="USERNAME"):
        kafka.security_config()
    monkeypatch.setenv("RECSYS_KAFKA_SASL_USERNAME", "recsys")
    monkeypatch.setenv("RECSYS_KAFKA_SASL_PASSWORD", "pw")
    monkeypatch.setenv("RECSYS_KAFKA_SSL_CAFILE", "/certs/ca.crt")
    assert kafka.security_config() == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": "recsys",
        "sasl_plain_password": "pw", "ssl_cafile": "/certs/ca.crt", "ssl_certfile": None, "ssl_keyfile": None,
        "ssl_check_hostname": True,
    }
    assert kafka.client_config("b1:9093,b2:9093")["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    monkeypatch.setenv("RECSYS_KAFKA_SASL_MECHANISM", "GSSAPI")
    with pytest.raises(ConfigError, match="MECHANISM"):
        kafka.security_config()
    monkeypatch.setenv("RECSYS_KAFKA_SECURITY_PROTOCOL", "TLS")
    with pytest.raises(ConfigError, match="SECURITY_PROTOCOL"):
        kafka.security_config()


def test_auth_cli_writes_hashes_only_and_mints_tokens(tmp_path, capsys, monkeypatch):
    from recsys import cli

    keys = tmp_path / "keys.json"
    assert cli.main(["auth", "new-key", "--id", "shop", "--scope", "recommend", "--keys-file", str(keys)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("shop.") and key.split(".")[1] not in keys.read_text()
    assert keys.stat().st_mode & 0o777 == 0o600
    store = KeyStore.from_file(str(keys))
    assert store.verify(key).scopes == frozenset({"recommend"})
    assert cli.main(["auth", "new-key", "--id", "shop", "--keys-file", str(keys)]) == 2  # no silent overwrite
    monkeypatch.setenv("RECSYS_AUTH_JWT_SECRET", "q" * 32)
    assert cli.main(["auth", "token", "--sub", "app", "--scope", "read_monitoring", "--ttl-s", "60"]) == 0
    token = capsys.readouterr().out.strip()
    assert JwtVerifier(b"q" * 32).verify(token).scopes == frozenset({"read_monitoring"})
    assert cli.main(["auth", "revoke", "--id", "shop", "--keys-file", str(keys)]) == 0
    assert len(KeyStore.from_file(str(keys))) == 0


def test_deeply_nested_token_parts_are_malformed_not_a_crash():
    verifier = JwtVerifier(SECRET)
    nested = signed(b"[" * 5000, b"{}")
    with pytest.raises(Unauthenticated, match="malformed_token"):
        verifier.verify(nested)
    with pytest.raises(Unauthenticated, match="malformed_token"):
        verifier.verify(signed(b'{"alg":"HS256"}', b"[" * 5000))
