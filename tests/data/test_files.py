"""The download path of the published data sets, against a real HTTP server on 127.0.0.1
(nothing leaves the machine): a file is kept only when its SHA-256 matches."""

import hashlib
import http.server
import threading
from functools import partial

import pytest
import torch

from fedloom.data.files import Remote, fetch
from fedloom.data.torch_data import from_torch
from fedloom.errors import DataError, DataMissing


@pytest.fixture
def server(tmp_path, monkeypatch):
    for name in ("no_proxy", "NO_PROXY"):  # a CI proxy must not see loopback requests
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_a_download_is_kept_only_when_its_digest_matches(server, tmp_path):
    served, url = server
    payload = b"IDX pretend payload" * 100
    (served / "good.gz").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    cache = tmp_path / "cache" / "set"
    missing = url + "absent.gz"  # the first mirror fails (404), the second serves it
    got = fetch(cache, Remote("good.gz", (missing, url + "good.gz"), digest),
                what="Test", download=True, verify=True)  # fmt: skip
    assert got == cache / "good.gz" and got.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == ["good.gz"]  # no .part left behind
    (served / "bad.gz").write_bytes(b"tampered")
    with pytest.raises(DataMissing, match=r"Test file bad\.gz is not in .*set and could not be "
                       r"downloaded \(.*absent\.gz: HTTP Error 404.*bad\.gz: .*bad\.gz\.part is "
                       r"corrupt or not the published file"):  # fmt: skip
        fetch(cache, Remote("bad.gz", (missing, url + "bad.gz"), digest),
              what="Test", download=True, verify=True)  # fmt: skip
    assert not (cache / "bad.gz").exists() and not (cache / "bad.gz.part").exists()
    (cache / "good.gz").write_bytes(b"truncated")  # a cached file is checked on every load
    with pytest.raises(DataError, match=r"good\.gz is corrupt or not the published file"):
        fetch(cache, Remote("good.gz", (url + "good.gz",), digest),
              what="Test", download=True, verify=True)  # fmt: skip


def test_from_torch_refuses_items_that_are_not_pairs_and_uneven_inputs():
    with pytest.raises(
        DataError, match=r"client 1's data set: items must be \(input, label\) pairs"
    ):
        from_torch([[(torch.zeros(2), 0)], [torch.zeros(2)]], [(torch.zeros(2), 0)])
    with pytest.raises(DataError, match=r"client 0's data set: inputs differ in shape"):
        from_torch([[(torch.zeros(2), 0), (torch.zeros(3), 1)]], [(torch.zeros(2), 0)])
    data = from_torch([[(torch.zeros(2), 4)]], [(torch.ones(2), 1)])
    assert data.num_classes == 5 and data.train_owner.tolist() == [0]
