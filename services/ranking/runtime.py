"""Start (or join) Ray, start Serve with its native gRPC proxy, deploy the ranker, switch versions, stop.

Why not `recsys.common.server.GrpcServer`: with Ray Serve the gRPC server is Serve's own proxy actor, which
receives every call and routes it to a replica by method name; there is no server object of ours to wrap
with the bootstrap's interceptors. What the bootstrap gives the other services is provided here by Serve:
- health: `grpc.health.v1.Health/Check` is registered on the proxy and answered by the replicas
  (SERVING once a model is active); the proxy's own `/ray.serve.RayServeAPIService/Healthz` also exists;
- reflection: Serve's proxy enables server reflection;
- metrics: Serve's per-request gRPC metrics plus ours (`recsys.ranking.metrics`) on Ray's metrics export
  port (`RECSYS_METRICS_PORT`);
- logs: JSON lines (`recsys.common.logs` in driver and replicas, Serve's JSON logging config);
- errors: replicas set status codes on Serve's gRPC context (INVALID_ARGUMENT naming the field, ...);
- graceful shutdown: SIGTERM -> `serve.shutdown()` (replicas drain) -> `ray.shutdown()`.
The proxy binds `[::]:RECSYS_RANKING_PORT` (Serve has no host setting): on one machine keep the port
firewalled; on Kubernetes the NetworkPolicy admits only the gateway.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path

import ray
from ray import serve
from ray.serve.config import gRPCOptions

from recsys.common import config
from recsys.common.errors import CliError
from recsys.common.ports import free_port
from recsys.ranking import settings as ranking_settings
from recsys.ranking.server import build, resolve_versions
from recsys.ranking.settings import RankingSettings

log = logging.getLogger("recsys.ranking.runtime")

SERVICER_FUNCTIONS = [
    "recsys.v1.ranking_pb2_grpc.add_RankingServiceServicer_to_server",
    "grpc_health.v1.health_pb2_grpc.add_HealthServicer_to_server",
]
ROUTE_PREFIX = "/ranking"
PRELOAD_MODULES = "recsys.ranking.server"
# Unix socket paths (sun_path) hold 107 bytes; Ray appends "/session_<date>_<pid>/sockets/plasma_store".
_MAX_TEMP_DIR_LEN = 40
# Environment of the local Ray's processes (inherited from this driver by GCS, raylet and every worker),
# set unless already in the environment (RECSYS_RAY_FAST_PATH=false sets none). Measured through the Serve
# gRPC proxy with 300 candidates on 2 shared cores, see README "Latency settings".
FAST_PATH_ENV = {
    # proxy -> replica over gRPC instead of Ray actor calls
    "RAY_SERVE_PROXY_USE_GRPC": "1",
    # user code on the replica's main event loop: no hop to a separate thread per request
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    # the proxy's router on the proxy's main loop: no cross-loop hand-off per request
    "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "0",
    # Serve's request-path log records are buffered (flushed at 1000 records or on an ERROR)
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
    # collect and freeze start-up objects once: fewer GC pauses on the request path (Serve's default, pinned)
    "RAY_SERVE_FREEZE_GC_ON_STARTUP": "1",
    # no replica-side ingress servers unless RECSYS_RANKING_DIRECT_PORTS names their ports (then
    # direct_ingress_env): by default they would bind [::] anywhere in 40000-41000 and drain 35 s on every stop
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    # Serve's controller reconciles every 0.5 s (default 0.1 s) and replicas export Serve's metrics every 1 s
    # (default 0.1 s): Ray's background work on 2 cores fell from ~70 to ~45 ms of CPU per second, and the
    # ranking service's CPU per request at concurrency 1 from 4.1 to 3.2-3.3 ms; replica restarts are seen up
    # to 0.4 s later, and Prometheus scrapes far less often than once a second anyway
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # OpenMP threads (LightGBM) sleep after a predict instead of spinning on the cores the proxy needs
    # (LightGBM alone, 2 threads, busy machine: 1 row 1.4 -> 0.07 ms, 300 rows 6.1 -> 2.1 ms)
    "OMP_WAIT_POLICY": "PASSIVE",
}


# What Ray's own preset RAY_SERVE_THROUGHPUT_OPTIMIZED=1 decides when it is set. It does not cover the
# proxy's transport: in Ray 2.60 RAY_SERVE_PROXY_USE_GRPC is computed before the preset is applied, so the
# preset alone leaves proxy -> replica on actor calls (measured: proxy CPU 3.1 ms/request instead of 1.5).
_PRESET_COVERS = frozenset(
    {
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD",
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP",
        "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE",
        "RAY_SERVE_FREEZE_GC_ON_STARTUP",
        "RAY_SERVE_ENABLE_DIRECT_INGRESS",
    }
)


def direct_ingress_env(ports: tuple[int, int], drain_s: float) -> dict[str, str]:
    """Serve's direct ingress on `ports` (FIRST, LAST): each replica serves the RankingService on a port of
    its own there, and a stopping replica keeps it open `drain_s` (Serve's default is 30 s)."""
    return {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
        "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": str(ports[0]),
        "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": str(ports[1]),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(max(0.0, drain_s)),
    }


def apply_fast_path_env(env: MutableMapping[str, str]) -> dict[str, str]:
    """Put FAST_PATH_ENV into `env` where not set already; returns what was added. With Ray's preset
    RAY_SERVE_THROUGHPUT_OPTIMIZED in `env`, the variables the preset decides are left to it."""
    preset = env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "").strip().lower() in ("1", "true")
    added = {
        key: value for key, value in FAST_PATH_ENV.items() if key not in env and not (preset and key in _PRESET_COVERS)
    }
    env.update(added)
    return added


def ray_temp_dir() -> str:
    """The local Ray's temp dir: RECSYS_RAY_TEMP_DIR, else <var>/ray; a short folder under /tmp (one per wanted
    folder, so that two instances never share one) when that path is too long for Ray's unix sockets."""
    chosen = ranking_settings.RAY_TEMP_DIR.str() or str(Path(config.VAR_DIR.str()) / "ray")
    path = Path(chosen).resolve()
    if len(str(path)) > _MAX_TEMP_DIR_LEN:
        digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
        short = Path(tempfile.gettempdir()) / f"recsys-ray-{os.getuid()}-{digest}"
        log.warning(
            "ray temp dir too long for unix sockets, using a short one",
            extra={"wanted": str(path), "using": str(short)},
        )
        path = short
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _metrics_port() -> int | None:
    port = config.METRICS_PORT.int()
    return port or None


class RankingRuntime:
    """Owns the Ray connection and the Serve application of the ranking service in this process."""

    def __init__(self, settings: RankingSettings, ray_address: str | None = None) -> None:
        self.settings = settings
        self.ray_address = ranking_settings.RAY_ADDRESS.str() if ray_address is None else ray_address
        self.local = not self.ray_address
        self.code_version = f"recsys-ranking-{secrets.token_hex(4)}"
        self.versions: dict[str, str] = {}
        self.batching = settings.batching
        self.metrics_port: int | None = None
        self._lock = threading.Lock()
        self._started_ray = False

    # -- start ----------------------------------------------------------------------------------------------
    def start(self, versions: dict[str, str] | None = None) -> RankingRuntime:
        """Start Ray (or connect), start Serve's gRPC proxy and deploy; returns when the app is RUNNING."""
        versions = versions or resolve_versions(self.settings)
        try:
            started = time.perf_counter()
            self._start_ray()
            ray_ms = _ms(started)
            serve_started = time.perf_counter()
            serve.start(
                grpc_options=gRPCOptions(
                    port=self.settings.port,
                    grpc_servicer_functions=SERVICER_FUNCTIONS,
                    request_timeout_s=self.settings.request_timeout_s or None,
                ),
                http_options={"host": "127.0.0.1", "port": 0} if self.local else None,
            )
            serve_ms = _ms(serve_started)
            self._deploy(versions)
            log.info(
                "ranking started",
                extra={"ray_ms": ray_ms, "serve_ms": serve_ms, "total_ms": _ms(started), "local": self.local},
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_ray(self) -> None:
        if ray.is_initialized():
            return
        if not self.local:
            with _keep_signal_handlers():
                ray.init(address=self.ray_address, namespace="recsys", log_to_driver=True)
            self._started_ray = True
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # no ~/.ray/auth_token in the user's home
        # Workers import the replica's code (torch, LightGBM, the deployment) as soon as the raylet starts
        # them, while Serve's controller and proxy come up: a cold start is ~1.3 s shorter (9.4 -> 8.1 s).
        os.environ.setdefault("RAY_preload_python_modules", PRELOAD_MODULES)
        ports = ranking_settings.parse_port_range(ranking_settings.DIRECT_PORTS.str())
        if ports is not None:  # before the fast path, whose default is no direct ingress
            for key, value in direct_ingress_env(ports, ranking_settings.DIRECT_DRAIN_S.float()).items():
                os.environ.setdefault(key, value)
        if ranking_settings.RAY_FAST_PATH.bool():
            apply_fast_path_env(os.environ)
        temp_dir = ray_temp_dir()
        self.metrics_port = _metrics_port() or free_port()
        with _keep_signal_handlers():
            ray.init(
                num_cpus=ranking_settings.RAY_NUM_CPUS.int(),
                include_dashboard=False,
                object_store_memory=ranking_settings.RAY_OBJECT_STORE_BYTES.int(),
                _node_ip_address="127.0.0.1",
                _temp_dir=temp_dir,
                _metrics_export_port=self.metrics_port,
                namespace="recsys",
                log_to_driver=True,
            )
        self._started_ray = True
        log.info(
            "local ray started",
            extra={"temp_dir": temp_dir, "metrics_port": self.metrics_port, "direct_ingress_ports": ports},
        )

    def _deploy(self, versions: dict[str, str], batching: bool | None = None) -> None:
        start = time.perf_counter()
        app = build(self.settings, versions, code_version=self.code_version, batching=batching)
        serve.run(app, name=self.settings.app_name, route_prefix=ROUTE_PREFIX)
        self.versions = dict(versions)
        if batching is not None:
            self.batching = batching
        log.info(
            "ranking app deployed",
            extra={"versions": versions, "batching": self.batching, "ms": round((time.perf_counter() - start) * 1e3)},
        )

    # -- change ---------------------------------------------------------------------------------------------
    def activate(self, versions: dict[str, str], batching: bool | None = None) -> None:
        """Switch model versions (and optionally batching) on the running replicas, in place."""
        with self._lock:
            merged = {**self.versions, **versions}
            resolve_check = RankingSettings.from_dict({**self.settings.to_dict(), "pinned_versions": merged})
            resolve_versions(resolve_check)  # raises CliError on an unknown version before touching Serve
            self._deploy(merged, batching)

    def refresh(self) -> bool:
        """Follow the registry's `latest` for unpinned rankers; True when something was switched."""
        try:
            wanted = resolve_versions(self.settings)
        except CliError as exc:
            log.warning("registry check failed", extra={"error": str(exc)})
            return False
        if wanted == self.versions:
            return False
        log.info("new model versions in the registry", extra={"from": self.versions, "to": wanted})
        self.activate(wanted)
        return True

    def watch(self, stop: threading.Event) -> None:
        """Poll the registry every `watch_s` seconds until `stop` is set (no-op when watch_s <= 0)."""
        if self.settings.watch_s <= 0:
            stop.wait()
            return
        while not stop.wait(self.settings.watch_s):
            try:
                self.refresh()
            except Exception:
                log.exception("hot swap failed; the previous versions stay active")

    # -- stop -----------------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Local: shut Serve and Ray down (no process left). Cluster: delete our app and disconnect."""
        if not ray.is_initialized():
            return
        try:
            if self.local:
                serve.shutdown()
            else:
                serve.delete(self.settings.app_name)
        except Exception:
            log.exception("serve shutdown failed")
        finally:
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False
        log.info("ranking stopped")


@contextlib.contextmanager
def _keep_signal_handlers():
    """ray.init installs a native SIGTERM handler in the driver that aborts the process; put ours back so
    that SIGTERM still shuts Serve and Ray down in order."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)


def _ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000.0)
