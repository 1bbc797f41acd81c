"""`recsys materialize` and `recsys features serve | consume`."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from recsys.common.commands import add_serve_command
from recsys.common.config import VAR_DIR
from recsys.common.errors import CliError, FailedPrecondition
from recsys.features import settings


def register(subparsers: argparse._SubParsersAction) -> None:
    mat = subparsers.add_parser(
        "materialize",
        help="load the offline feature tables into the Feast online store (incremental by default)",
    )
    mat.add_argument("--data", type=Path, default=None,
                     help="build the offline tables from this dataset first, into RECSYS_FEATURES_OFFLINE_DIR or "
                          "<RECSYS_VAR_DIR>/features (default: use the tables the training pipeline wrote in the "
                          "latest model version)")
    mat.add_argument("--views", default="", help="comma-separated feature views (default: all batch views)")
    mat.add_argument("--full", action="store_true", help="re-materialize every view over its whole time range")
    mat.set_defaults(func=_materialize)

    features = subparsers.add_parser("features", help="the feature service (Feast online features over gRPC)")
    sub = features.add_subparsers(dest="features_command", required=True)
    add_serve_command(sub, __package__, "serve FeatureService over gRPC", settings.PORT)
    consume = sub.add_parser("consume", help="consume the events topic into the streaming features")
    consume.add_argument("--bootstrap", default=None, help="Kafka bootstrap servers (default RECSYS_KAFKA_BOOTSTRAP)")
    consume.set_defaults(func=_consume)


def _materialize(args: argparse.Namespace) -> int:
    from recsys.features import materialize, offline
    from recsys.features.settings import FeatureSettings
    from recsys.features.store import StoreConfigError

    cfg = FeatureSettings.from_env()
    if args.data is not None and not settings.OFFLINE_DIR.str():  # never write into a model version's folder
        cfg = replace(cfg, offline_dir=(Path(VAR_DIR.str()) / "features").absolute())
    views = [v.strip() for v in args.views.split(",") if v.strip()]
    try:
        if args.data is not None:
            from recsys.training.data.loaders import load_dataset
            from recsys.training.features import write_offline_tables

            paths = write_offline_tables(load_dataset(args.data), cfg.offline_dir)
            print(f"wrote {len(paths)} offline tables to {cfg.offline_dir}")
        report = materialize.materialize(cfg, views or None, full=args.full)
    except (offline.OfflineTableError, materialize.MaterializeError, StoreConfigError) as exc:
        raise CliError(str(exc)) from exc
    modes = ", ".join(f"{view} ({mode})" for view, mode in sorted(report.modes.items()))
    print(f"materialized up to {report.end:%Y-%m-%d %H:%M:%S} UTC in {report.seconds:.1f}s: {modes}")
    return 0


def _consume(args: argparse.Namespace) -> int:
    from recsys.common import config
    from recsys.common.heap import freeze_heap
    from recsys.common.kafka.changelog import ItemChangeFollower
    from recsys.common.logs import configure_logging
    from recsys.common.metrics import start_metrics_server
    from recsys.common.pacing import DutyCycle
    from recsys.features.catalog import ItemContentWriter
    from recsys.features.consumer import EventConsumer
    from recsys.features.service import registered_views
    from recsys.features.settings import FeatureSettings
    from recsys.features.store import open_store
    from recsys.features.streaming import StreamUpdater

    configure_logging("features-consumer", config.LOG_LEVEL.str())
    cfg = FeatureSettings.from_env()
    try:
        with registered_views():
            store = open_store(cfg)
            updater = StreamUpdater(store, recent_keep=cfg.recent_keep, dedup_keep=cfg.dedup_keep)
            content = ItemContentWriter(store)
    except FailedPrecondition as exc:
        raise CliError(exc.message) from exc
    consumer = EventConsumer(updater, bootstrap=args.bootstrap)
    items = ItemChangeFollower(config.KAFKA_ITEMS_TOPIC.str(), content.apply, args.bootstrap, name="features",
                               pace=DutyCycle.from_env()).start()
    metrics_port = start_metrics_server(config.BIND_HOST.str(), config.METRICS_PORT.int())
    logging.getLogger("recsys.features.consumer").info("consuming", extra={"metrics_port": metrics_port})
    freeze_heap()

    def _stop(signum, _frame) -> None:
        threading.Thread(target=consumer.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        consumer.run()
    finally:
        items.stop()
        consumer.close()
    stats = consumer.stats
    print(f"consumed: applied {stats.applied}, duplicates {stats.duplicates}, invalid {stats.invalid}, "
          f"dead-lettered {consumer.loop.dead_lettered}", file=sys.stderr)
    return 0
