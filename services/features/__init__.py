"""The feature service: Feast definitions, materialization, the gRPC FeatureService and streaming updates."""
