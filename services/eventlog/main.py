"""The log writer process: consume Kafka into the event log until SIGTERM / SIGINT (`python -m recsys.eventlog`,
`recsys eventlog run`). It serves no gRPC; Prometheus metrics go to RECSYS_METRICS_PORT (0 = a free port,
logged)."""

from __future__ import annotations

import logging
import signal
import threading

from recsys.common import config
from recsys.common.kafka import admin as kafka_admin
from recsys.common.kafka.changelog import ITEMS_TOPIC_CONFIG
from recsys.common.logs import configure_logging
from recsys.common.metrics import start_metrics_server
from recsys.eventlog.settings import EventLogSettings
from recsys.eventlog.writer import EventLogWriter

log = logging.getLogger("recsys.eventlog")


def main(port: int | None = None) -> int:
    """Run the writer until SIGTERM / SIGINT; `port` is unused (no gRPC server). Exit code 1 if it failed."""
    stop = threading.Event()  # a signal during start-up stops the writer before its first poll

    def _stop(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    configure_logging("eventlog", config.LOG_LEVEL.str())
    logging.getLogger("kafka").setLevel(max(logging.WARNING, logging.getLogger().level))  # per-connection chatter
    settings = EventLogSettings.from_env()
    kafka_admin.ensure_topics([*settings.tables, settings.dlq_topic], settings.bootstrap,
                              configs={settings.items_topic: ITEMS_TOPIC_CONFIG})
    writer = EventLogWriter(settings, stop=stop)
    metrics_port = start_metrics_server(config.BIND_HOST.str(), config.METRICS_PORT.int())
    log.info("writing", extra={"uri": settings.uri, "group": settings.group, "topics": sorted(settings.tables),
                               "metrics_port": metrics_port})
    try:
        writer.run()
    except Exception:
        log.exception("the log writer failed; what it wrote stays, the rest is consumed again on restart")
        return 1
    finally:
        writer.close()
    log.info("stopped", extra={"records": writer.records, "rows": writer.rows, "writes": writer.writes,
                               "files": writer.files, "dead_lettered": writer.dead_lettered})
    return 0
