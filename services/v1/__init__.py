"""Generated gRPC / protobuf code for the `recsys.v1` protos (`make protos`). Do not edit by hand."""
