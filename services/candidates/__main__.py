"""`python -m recsys.candidates`: the candidates process (the image's, the chart's and the local stack's command)."""

from recsys.candidates.main import main
from recsys.common.entry import run_service

if __name__ == "__main__":
    run_service("candidates", main)
