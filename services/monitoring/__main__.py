"""`python -m recsys.monitoring`: run the monitoring service."""

import sys

from recsys.monitoring.app import main

if __name__ == "__main__":  # not when a spawned drift process imports this module as __mp_main__
    sys.exit(main())
