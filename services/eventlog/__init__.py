"""The event log: impressions and events from Kafka kept as partitioned Parquet, for retraining (`layout` is the
format every reader and the writer share)."""
