"""`python -m recsys.monitoring`: the monitoring process (the image's, the chart's and the local stack's command)."""

from recsys.common.entry import run_service
from recsys.monitoring.main import main

if __name__ == "__main__":  # not when a spawned drift process imports this module as __mp_main__
    run_service("monitoring", main)
