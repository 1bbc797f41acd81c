"""`python -m recsys.monitoring`: run the monitoring service."""

from recsys.common.entry import run_service
from recsys.monitoring.app import main

if __name__ == "__main__":  # not when a spawned drift process imports this module as __mp_main__
    run_service("monitoring", main)
