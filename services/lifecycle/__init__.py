"""The model lifecycle loop: canary decisions from the monitoring service's figures, and the schedule that runs
`recsys retrain` (the gate lives in `recsys.training`, the canary state in `recsys.model.rollout`)."""
