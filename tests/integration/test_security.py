"""Transport security, authentication, rate limits and load shedding on real gRPC servers in this process: the
gateway's create_server (backends unreachable, so Recommend degrades to popular items) and the bootstrap."""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).parent))  # security_support sits beside this file (importlib import mode)
from security_support import make_certs, running_gateway  # noqa: E402

from recsys.common import healthcheck  # noqa: E402
from recsys.common.auth import ApiKey, Authenticator, JwtVerifier, KeyStore, mint_jwt  # noqa: E402
from recsys.common.clients import aio_channel, channel, insecure_channel  # noqa: E402
from recsys.common.server import GrpcServer, ServerOptions  # noqa: E402
from recsys.common.tls import TlsConfig  # noqa: E402
from recsys.v1 import (  # noqa: E402
    events_pb2,
    events_pb2_grpc,
    monitoring_pb2,
    monitoring_pb2_grpc,
    recommend_pb2,
    recommend_pb2_grpc,
)

pytestmark = pytest.mark.integration

JWT_SECRET = "test-secret-" + "x" * 40
RECOMMEND_KEY = "shop-web.Zr3cQbM1kTg2yP9vWn4sLh8dXe6aFu0oJi7cRb5tYq"
PUBLISH_KEY = "event-pipe.Pq8wErT5yUi2oPa4sDf6gHj1kLz3xCv7bNm9qWe0rTy"
UNLIMITED_KEY = "batch-job.Mn4bVc6xZa8sDf1gHj3kLq5wEr7tYu9iOp2aSd4fGh"


def keys_document() -> str:
    import json

    keys = [
        ApiKey.for_key(RECOMMEND_KEY, ["recommend"]),
        ApiKey.for_key(PUBLISH_KEY, ["publish_events"]),
        ApiKey.for_key(UNLIMITED_KEY, ["recommend"], rate_per_s=0),
    ]
    return json.dumps({"keys": [k.record() for k in keys]})


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    root = tmp_path_factory.mktemp("tls")
    return {"ours": make_certs(root / "ours"), "other": make_certs(root / "other", "another CA")}


def recommend(target_channel: grpc.Channel, metadata=(), user: str = "u1") -> recommend_pb2.RecommendResponse:
    stub = recommend_pb2_grpc.RecommendServiceStub(target_channel)
    return stub.Recommend(recommend_pb2.RecommendRequest(user_id=user, k=5), timeout=5, metadata=metadata)


def code_of(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


# --- TLS and mTLS ------------------------------------------------------------------------------------------


def test_tls_gateway_answers_tls_clients_and_refuses_plaintext(certs, monkeypatch):
    ours = certs["ours"]
    monkeypatch.setenv("RECSYS_TLS_CERT", str(ours / "server.crt"))
    monkeypatch.setenv("RECSYS_TLS_KEY", str(ours / "server.key"))
    with running_gateway() as gw:
        assert gw.server.secure
        with channel(gw.address, TlsConfig(ca_file=str(ours / "ca.crt"))) as ch:
            response = recommend(ch)
        assert len(response.items) == 5 and response.degraded  # the backends are down: popular items
        with insecure_channel(gw.address) as ch:
            assert code_of(lambda: recommend(ch)) == grpc.StatusCode.UNAVAILABLE
        with channel(gw.address, TlsConfig(ca_file=str(certs["other"] / "ca.crt"))) as ch:
            assert code_of(lambda: recommend(ch)) == grpc.StatusCode.UNAVAILABLE, "a server from an untrusted CA"


def test_mtls_refuses_peers_without_a_certificate_of_our_ca(certs, monkeypatch):
    ours, other = certs["ours"], certs["other"]
    monkeypatch.setenv("RECSYS_TLS_CERT", str(ours / "server.crt"))
    monkeypatch.setenv("RECSYS_TLS_KEY", str(ours / "server.key"))
    monkeypatch.setenv("RECSYS_TLS_CA", str(ours / "ca.crt"))
    monkeypatch.setenv("RECSYS_TLS_CLIENT_AUTH", "require")
    with running_gateway() as gw:
        assert gw.server.options.tls.require_client_cert
        ca = str(ours / "ca.crt")
        good = TlsConfig(str(ours / "client.crt"), str(ours / "client.key"), ca)
        with channel(gw.address, good) as ch:
            assert len(recommend(ch).items) == 5
        # The service's own certificate (serverAuth + clientAuth) is a valid client too: how services call each other.
        with channel(gw.address, TlsConfig(str(ours / "server.crt"), str(ours / "server.key"), ca)) as ch:
            assert len(recommend(ch).items) == 5
        refused = {
            "no client certificate": TlsConfig(ca_file=ca),
            "client certificate from another CA": TlsConfig(str(other / "client.crt"), str(other / "client.key"), ca),
        }
        for case, tls in refused.items():
            with channel(gw.address, tls) as ch:
                assert code_of(lambda ch=ch: recommend(ch)) == grpc.StatusCode.UNAVAILABLE, case
        # The environment drives clients too: `channel(target)` with the same variables is an mTLS client,
        # and so is its asyncio counterpart.
        with channel(gw.address) as ch:
            assert len(recommend(ch).items) == 5

        async def aio_recommend() -> int:
            async with aio_channel(gw.address) as ch:
                stub = recommend_pb2_grpc.RecommendServiceStub(ch)
                reply = await stub.Recommend(recommend_pb2.RecommendRequest(user_id="u2", k=3), timeout=5)
                return len(reply.items)

        assert asyncio.run(aio_recommend()) == 3
        # ... and the health check the charts' exec probes run under TLS (the kubelet's gRPC probe has no TLS).
        assert healthcheck.check(gw.address, server_name="localhost") == (True, "SERVING")


def test_rotated_certificate_is_served_to_new_connections(certs, tmp_path):
    live = tmp_path / "live"
    shutil.copytree(certs["ours"], live)
    server = GrpcServer("rotation", [], [], ServerOptions(tls=TlsConfig(str(live / "server.crt"),
                                                                           str(live / "server.key")))).start(False)
    try:
        def serving(ca: Path) -> grpc.StatusCode:
            with channel(server.address, TlsConfig(ca_file=str(ca))) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                return code_of(lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=5))

        assert serving(certs["ours"] / "ca.crt") == grpc.StatusCode.OK
        for name in ("server.crt", "server.key"):  # what cert-manager does: new files in place
            shutil.copy(certs["other"] / name, live / f"{name}.new")
            (live / f"{name}.new").replace(live / name)
        assert serving(certs["other"] / "ca.crt") == grpc.StatusCode.OK
        assert serving(certs["ours"] / "ca.crt") == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0)


# --- authentication and authorisation ------------------------------------------------------------------------


@pytest.fixture()
def auth_env(monkeypatch):
    monkeypatch.setenv("RECSYS_AUTH_MODE", "any")
    monkeypatch.setenv("RECSYS_AUTH_KEYS", keys_document())
    monkeypatch.setenv("RECSYS_AUTH_JWT_SECRET", JWT_SECRET)
    monkeypatch.setenv("RECSYS_AUTH_JWT_ISSUER", "recsys-tests")


def token(scopes, ttl_s=300.0, secret=JWT_SECRET, issuer="recsys-tests", **extra) -> str:
    return mint_jwt(secret.encode(), "partner-7", scopes, ttl_s, issuer=issuer, extra=extra)


def test_public_rpcs_need_credentials_with_the_right_scope(auth_env, caplog):
    caplog.set_level(logging.WARNING, logger="recsys.auth")
    expired = token(["recommend"], ttl_s=-3600)
    cases = {
        "no credentials": ((), grpc.StatusCode.UNAUTHENTICATED),
        "unknown key": ((("x-api-key", "nobody.Zr3cQbM1kTg2yP9vWn4sLh8dXe6aFu0oJi7cRb5tYq"),), "UNAUTHENTICATED"),
        "wrong secret": ((("x-api-key", "shop-web.not-the-secret"),), "UNAUTHENTICATED"),
        "malformed key": ((("x-api-key", "no dot here"),), "UNAUTHENTICATED"),
        "expired token": ((("authorization", f"Bearer {expired}"),), "UNAUTHENTICATED"),
        "malformed token": ((("authorization", "Bearer abc.def"),), "UNAUTHENTICATED"),
        "forged token": ((("authorization", f"Bearer {token(['recommend'], secret='y' * 40)}"),), "UNAUTHENTICATED"),
        "token of another issuer": ((("authorization", f"Bearer {token(['recommend'], issuer='evil')}"),),
                                    "UNAUTHENTICATED"),
        "not a bearer": ((("authorization", f"Basic {RECOMMEND_KEY}"),), "UNAUTHENTICATED"),
        "key without the scope": ((("x-api-key", PUBLISH_KEY),), "PERMISSION_DENIED"),
        "token without the scope": ((("authorization", f"Bearer {token(['read_monitoring'])}"),),
                                    "PERMISSION_DENIED"),
        "key with the scope": ((("x-api-key", RECOMMEND_KEY),), "OK"),
        "token with the scope": ((("authorization", f"Bearer {token(['recommend', 'publish_events'])}"),), "OK"),
    }
    with running_gateway() as gw, insecure_channel(gw.address) as ch:
        for case, (metadata, expected) in cases.items():
            try:
                recommend(ch, metadata)
                code, details = grpc.StatusCode.OK, ""
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
            want = expected if isinstance(expected, grpc.StatusCode) else grpc.StatusCode[expected]
            assert code == want, case
            if code == grpc.StatusCode.UNAUTHENTICATED:
                assert details == "missing or invalid credentials", case  # the same words whatever went wrong
            if code == grpc.StatusCode.PERMISSION_DENIED:
                assert details == "permission denied", case
        # EventService needs publish_events: a valid key passes auth and reaches validation (INVALID_ARGUMENT).
        events = events_pb2_grpc.EventServiceStub(ch)
        empty = events_pb2.PublishRequest()
        assert code_of(lambda: events.Publish(empty, timeout=5, metadata=(("x-api-key", RECOMMEND_KEY),))) \
            == grpc.StatusCode.PERMISSION_DENIED
        assert code_of(lambda: events.Publish(empty, timeout=5, metadata=(("x-api-key", PUBLISH_KEY),))) \
            == grpc.StatusCode.INVALID_ARGUMENT
        # Health (probes) and other non-public services need no credentials.
        health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING

    refused = [r for r in caplog.records if r.getMessage() == "call refused"]
    assert {r.reason for r in refused} >= {"missing_credentials", "unknown_key", "wrong_secret", "malformed_key",
                                           "expired", "bad_signature", "wrong_issuer", "missing_scope"}
    by_reason = {r.reason: r for r in refused}
    assert by_reason["wrong_secret"].key_id == "shop-web"
    assert by_reason["expired"].key_id == "partner-7"
    assert {r.key_id for r in refused if r.reason == "missing_scope"} == {"event-pipe", "partner-7", "shop-web"}
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in (RECOMMEND_KEY.split(".")[1], PUBLISH_KEY.split(".")[1], "not-the-secret", JWT_SECRET, expired):
        assert secret not in logged


class _Monitoring(monitoring_pb2_grpc.MonitoringServiceServicer):
    def GetOnlineMetrics(self, request, context):
        return monitoring_pb2.OnlineMetrics(window_seconds=request.window_seconds)


def test_monitoring_service_needs_read_monitoring():
    verifier = JwtVerifier(JWT_SECRET.encode())
    auth = Authenticator(KeyStore({}), verifier)
    server = GrpcServer(
        "monitoring-auth",
        [lambda s: monitoring_pb2_grpc.add_MonitoringServiceServicer_to_server(_Monitoring(), s)],
        ["recsys.v1.MonitoringService"],
        ServerOptions(auth=auth),
    ).start(metrics=False)
    try:
        with insecure_channel(server.address) as ch:
            stub = monitoring_pb2_grpc.MonitoringServiceStub(ch)

            def call(scopes):
                md = (("authorization", f"Bearer {token(scopes, issuer='')}"),) if scopes is not None else ()
                return code_of(lambda: stub.GetOnlineMetrics(monitoring_pb2.GetOnlineMetricsRequest(), timeout=5,
                                                              metadata=md))

            assert call(None) == grpc.StatusCode.UNAUTHENTICATED
            assert call(["recommend"]) == grpc.StatusCode.PERMISSION_DENIED
            assert call(["read_monitoring"]) == grpc.StatusCode.OK
    finally:
        server.stop(0)


# --- rate limits and load shedding ---------------------------------------------------------------------------


def test_per_key_rate_limit_answers_resource_exhausted(auth_env, monkeypatch):
    monkeypatch.setenv("RECSYS_GATEWAY_RATE_LIMIT_RPS", "1")
    monkeypatch.setenv("RECSYS_GATEWAY_RATE_LIMIT_BURST", "3")
    with running_gateway() as gw, insecure_channel(gw.address) as ch:
        key = (("x-api-key", RECOMMEND_KEY),)
        assert [code_of(lambda: recommend(ch, key)) for _ in range(3)] == [grpc.StatusCode.OK] * 3
        with pytest.raises(grpc.RpcError) as limited:
            recommend(ch, key)
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry_after = dict(limited.value.trailing_metadata() or ())["retry-after-ms"]
        assert 0 < int(retry_after) <= 1000
        # Buckets are per key: another caller is not affected; a key with rate_per_s 0 has no limit.
        bearer = (("authorization", f"Bearer {token(['recommend'])}"),)
        assert code_of(lambda: recommend(ch, bearer)) == grpc.StatusCode.OK
        unlimited = (("x-api-key", UNLIMITED_KEY),)
        assert {code_of(lambda: recommend(ch, unlimited)) for _ in range(10)} == {grpc.StatusCode.OK}
        time.sleep(1.05)  # one token back
        assert code_of(lambda: recommend(ch, key)) == grpc.StatusCode.OK


def test_rate_limit_without_auth_is_per_client_address(monkeypatch):
    monkeypatch.setenv("RECSYS_GATEWAY_RATE_LIMIT_RPS", "0.5")
    monkeypatch.setenv("RECSYS_GATEWAY_RATE_LIMIT_BURST", "2")
    with running_gateway() as gw, insecure_channel(gw.address) as ch:
        codes = [code_of(lambda: recommend(ch)) for _ in range(4)]
    assert codes == [grpc.StatusCode.OK] * 2 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2


class _Slow(events_pb2_grpc.EventServiceServicer):
    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def Publish(self, request, context):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.5)
        with self.lock:
            self.running -= 1
        return events_pb2.PublishResponse(accepted=len(request.events))


def test_bootstrap_sheds_load_beyond_max_concurrent_rpcs():
    slow = _Slow()
    server = GrpcServer(
        "shedding",
        [lambda s: events_pb2_grpc.add_EventServiceServicer_to_server(slow, s)],
        ["recsys.v1.EventService"],
        ServerOptions(workers=8, max_concurrent_rpcs=3),
    ).start(metrics=False)
    try:
        with insecure_channel(server.address) as ch:
            stub = events_pb2_grpc.EventServiceStub(ch)
            grpc.channel_ready_future(ch).result(timeout=5)

            def call() -> tuple[grpc.StatusCode, float]:
                started = time.perf_counter()
                code = code_of(lambda: stub.Publish(events_pb2.PublishRequest(), timeout=5))
                return code, time.perf_counter() - started

            with futures.ThreadPoolExecutor(10) as pool:
                results = list(pool.map(lambda _: call(), range(10)))
    finally:
        server.stop(0)
    ok = [t for code, t in results if code == grpc.StatusCode.OK]
    shed = [t for code, t in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    assert len(ok) + len(shed) == 10
    assert 1 <= len(ok) <= 3 + 2 and len(shed) >= 5, results  # a few may start after the first ones finished
    assert slow.most <= 3
    assert max(shed) < 0.4, "shed calls are refused at once, not after queueing"
