"""A tiny service on the real bootstrap, run as its own process by test_bootstrap.py.

Publish sleeps `events[0].value` seconds (to test draining) and rejects a missing user_id with
INVALID_ARGUMENT; it prints "PORT <grpc> <metrics>" once serving.
"""

from __future__ import annotations

import sys
import threading
import time

from recsys.common.errors import InvalidArgument
from recsys.common.server import GrpcServer, ServerOptions, run_forever
from recsys.v1 import events_pb2, events_pb2_grpc


class SlowEvents(events_pb2_grpc.EventServiceServicer):
    def Publish(self, request: events_pb2.PublishRequest, context) -> events_pb2.PublishResponse:
        for i, event in enumerate(request.events):
            if not event.user_id:
                raise InvalidArgument(f"events[{i}].user_id", "required")
        if request.events and request.events[0].value > 0:
            time.sleep(request.events[0].value)
        return events_pb2.PublishResponse(accepted=len(request.events))


def main() -> None:
    server = GrpcServer(
        "bootstrap-test",
        [lambda s: events_pb2_grpc.add_EventServiceServicer_to_server(SlowEvents(), s)],
        [events_pb2.DESCRIPTOR.services_by_name["EventService"].full_name],
        ServerOptions(shutdown_grace_s=float(sys.argv[1]) if len(sys.argv) > 1 else 5.0),
    )

    def announce() -> None:
        while server.metrics_port is None:
            time.sleep(0.01)
        print(f"PORT {server.port} {server.metrics_port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    run_forever(server)


if __name__ == "__main__":
    main()
