"""`python -m recsys.eventlog`: the log writer process (the local stack's and a deployment's command)."""

from recsys.common.entry import run_service
from recsys.eventlog.main import main

if __name__ == "__main__":
    run_service("eventlog", main)
