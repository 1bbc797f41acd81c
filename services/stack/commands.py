"""`recsys serve` (every service, supervised) and `recsys demo` (the main job)."""

from __future__ import annotations

import argparse
import os
import signal
import threading
from pathlib import Path

from recsys.common import config


def _serve(args: argparse.Namespace) -> int:
    from recsys.eventlog.settings import EventLogSettings
    from recsys.lifecycle.loop import LifecycleLoop, run_cli
    from recsys.lifecycle.settings import LifecycleSettings
    from recsys.stack.local import StackConfig, start_stack

    cfg = StackConfig.default(Path(config.VAR_DIR.str()), config.KAFKA_BOOTSTRAP.str(), fixed_ports=not args.free_ports)
    supervisor = start_stack(cfg)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    env = cfg.env()
    loop = None
    if not args.no_loop:  # the lifecycle loop: canary decisions, scheduled and requested retrains
        os.environ.update(env)  # the loop's settings read the stack's folders and addresses
        loop = LifecycleLoop(LifecycleSettings.from_env(), run_cli(env, cfg.var_dir / "logs" / "lifecycle.log"),
                             log_uri=EventLogSettings.from_env().uri).start()
    print("serving: " + ", ".join(f"{name} {cfg.address(name)}" for name in cfg.ports), flush=True)
    print(f"dashboard: {cfg.dashboard_url}", flush=True)
    try:
        stop.wait()
    finally:
        if loop is not None:
            loop.stop()
        supervisor.stop()
    return 0


def _demo(args: argparse.Namespace) -> int:
    if args.scenario == "drift":
        return _drift(args)
    from recsys.stack.demo import DemoOptions, run_demo

    run_demo(DemoOptions(
        var_dir=Path(config.VAR_DIR.str()).resolve(), kafka_bootstrap=config.KAFKA_BOOTSTRAP.str(),
        users=args.users, items=args.items, interactions=args.interactions, seed=args.seed, seconds=args.seconds,
        concurrency=args.concurrency, keep_running=args.keep_running, data=args.data,
    ))
    return 0


def _drift(args: argparse.Namespace) -> int:
    from recsys.stack.scenario import ScenarioOptions, print_summary, run_scenario

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt  # unwinds through the scenario's cleanup: loop, services, broker

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)  # also when started in the background with SIGINT ignored

    var = Path(config.VAR_DIR.str()).resolve() / "scenario-drift"
    opts = ScenarioOptions(var_dir=var, seed=args.seed, concurrency=args.concurrency)
    if args.users != DEMO_USERS or args.items != DEMO_ITEMS or args.interactions != DEMO_INTERACTIONS:
        opts = ScenarioOptions(var_dir=var, users=args.users, items=args.items, interactions=args.interactions,
                               seed=args.seed, concurrency=args.concurrency)
    print_summary(run_scenario(opts))
    return 0


DEMO_USERS, DEMO_ITEMS, DEMO_INTERACTIONS = 3000, 2000, 150_000


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="start every service on embedded defaults and keep them up")
    serve.add_argument("--no-loop", action="store_true",
                       help="no lifecycle loop (canary decisions, scheduled or requested `recsys retrain`)")
    serve.add_argument("--free-ports", action="store_true",
                       help="free loopback ports instead of 50051-50055 (a second stack beside another); "
                            "the `serving:` line names them")
    serve.set_defaults(func=_serve)
    demo = subparsers.add_parser("demo", help="the main job: data, training, every service, traffic, live CTR")
    demo.add_argument("--data", help="use this dataset folder instead of generating one")
    demo.add_argument("--scenario", choices=["drift"],
                      help="drift: tastes shift midway; monitoring, retrain, gate and canary recover CTR unaided "
                           "(its own private Kafka and var/scenario-drift; smaller data unless sizes are given)")
    demo.add_argument("--users", type=int, default=DEMO_USERS)
    demo.add_argument("--items", type=int, default=DEMO_ITEMS)
    demo.add_argument("--interactions", type=int, default=DEMO_INTERACTIONS)
    demo.add_argument("--seed", type=int, default=42)
    demo.add_argument("--seconds", type=float, default=60.0, help="how long the traffic simulator runs")
    demo.add_argument("--concurrency", type=int, default=4)
    demo.add_argument("--keep-running", action="store_true", help="keep the services up after the summary")
    demo.set_defaults(func=_demo)
