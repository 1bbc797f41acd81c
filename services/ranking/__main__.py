"""`python -m recsys.ranking`: run the ranking service (Ray Serve gRPC ingress) until SIGTERM."""

from recsys.common.entry import run_service
from recsys.ranking.server import serve_forever

if __name__ == "__main__":
    run_service("ranking", serve_forever)
