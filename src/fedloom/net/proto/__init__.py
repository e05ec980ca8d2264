"""Generated protobuf and gRPC modules for ``fedloom.proto`` (regenerate with the command in
the .proto file; they are checked in so that installing fedloom needs no code generator)."""
