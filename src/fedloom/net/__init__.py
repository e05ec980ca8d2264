"""Deployment over the network: the wire format, TLS certificates, and (next) the gRPC
server and clients that the same round loop drives."""
