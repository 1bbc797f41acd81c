"""Off-policy evaluation: what a candidate model would have earned on the logged, exploring traffic."""
