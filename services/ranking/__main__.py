"""`python -m recsys.ranking`: the ranking process (the image's, the chart's and the local stack's command)."""

from recsys.common.entry import run_service
from recsys.ranking.main import main

if __name__ == "__main__":
    run_service("ranking", main)
