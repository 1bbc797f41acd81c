"""Shared building blocks every service uses: config, logging, metrics, gRPC bootstrap, Kafka."""
