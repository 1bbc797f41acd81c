"""Monitoring service: Kafka-fed online metrics, Evidently drift reports and alerts, over gRPC."""
