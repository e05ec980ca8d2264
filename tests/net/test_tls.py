"""Real TLS on loopback: certificates from `fedloom certs`, a real gRPC server, real clients."""

import stat
from concurrent import futures

import grpc
import pytest

from fedloom.cli import main
from fedloom.net.certs import write_quickstart
from fedloom.net.proto import fedloom_pb2 as pb
from fedloom.net.proto import fedloom_pb2_grpc as rpc
from fedloom.net.tls import channel_credentials, peer_identity, server_credentials


class Greeter(rpc.FederationServicer):
    def Join(self, request, context):  # noqa: N802 - gRPC method name
        return pb.JoinReply(message=f"hello {peer_identity(context)}", run_id="test")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    write_quickstart(out, ["alice", "bob"])
    return out


@pytest.fixture(scope="module")
def address(certs):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    rpc.add_FederationServicer_to_server(Greeter(), server)
    port = server.add_secure_port(
        "127.0.0.1:0",
        server_credentials(certs / "server.pem", certs / "server.key", certs / "ca.pem"),
    )
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _join(channel):
    with channel:
        return rpc.FederationStub(channel).Join(pb.JoinRequest(client_id="x"), timeout=10)


def test_certs_command_writes_private_keys_readable_only_by_the_owner(tmp_path):
    assert main(["certs", "--out", str(tmp_path), "--clients", "a,b"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "ca.key", "ca.pem", "client-a.key", "client-a.pem", "client-b.key", "client-b.pem",
        "server.key", "server.pem",
    ]  # fmt: skip
    for key in tmp_path.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_mutual_tls_client_is_identified_by_its_certificate(certs, address):
    credentials = channel_credentials(
        certs / "ca.pem", certs / "client-alice.pem", certs / "client-alice.key"
    )
    reply = _join(grpc.secure_channel(address, credentials))
    assert reply.message == "hello alice"


def test_client_without_a_certificate_is_refused(certs, address):
    with pytest.raises(grpc.RpcError) as info:
        _join(grpc.secure_channel(address, channel_credentials(certs / "ca.pem")))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_plaintext_client_is_refused(address):
    with pytest.raises(grpc.RpcError) as info:
        _join(grpc.insecure_channel(address))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(certs, address, tmp_path):
    write_quickstart(tmp_path, ["mallory"])
    credentials = channel_credentials(
        certs / "ca.pem", tmp_path / "client-mallory.pem", tmp_path / "client-mallory.key"
    )
    with pytest.raises(grpc.RpcError) as info:
        _join(grpc.secure_channel(address, credentials))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_missing_files_say_how_to_create_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="fedloom certs --out DIR"):
        channel_credentials(tmp_path / "ca.pem")
