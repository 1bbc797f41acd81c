"""The local stack: every service as its own supervised process (`recsys serve`), and the demo job."""
