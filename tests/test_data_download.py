"""The downloader against a real HTTP server on 127.0.0.1."""
import hashlib
import json

import pytest

from http_fixtures import FileServer
from qdiff.data.download import (
    LOCK_NAME,
    ChecksumError,
    DownloadError,
    fetch_file,
    missing_files,
    offline_instructions,
)
from qdiff.data.manifest import RemoteFile, load_manifest, source_files

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


def remote(server, *paths, **kw):
    sums = dict(md5=hashlib.md5(PAYLOAD).hexdigest(), sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD))
    sums.update(kw)
    return RemoteFile(name="data.bin", urls=tuple(server.url + p for p in paths), **sums)


def no_sleep(_):
    pass


def test_download_verifies_and_renames(tmp_path):
    with FileServer() as server:
        server.files["/a/data.bin"] = PAYLOAD
        path = fetch_file(remote(server, "/a/data.bin"), tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]
    # A second call finds the verified file and does not download again.
    with FileServer() as server:
        assert fetch_file(remote(server, "/a/data.bin"), tmp_path, progress=False) == path
        assert server.requests == []


def test_checksum_mismatch_is_an_error_and_leaves_nothing(tmp_path):
    with FileServer() as server:
        server.files["/a/data.bin"] = PAYLOAD[:-1] + b"x"
        with pytest.raises(DownloadError, match="md5 mismatch"):
            fetch_file(remote(server, "/a/data.bin"), tmp_path, progress=False, sleep=no_sleep)
    assert list(tmp_path.iterdir()) == []


def test_challenge_page_and_html_fall_back_to_the_mirror(tmp_path):
    with FileServer() as server:
        server.challenge.add("/figshare/data.bin")
        server.html.add("/landing/data.bin")
        server.files["/mirror/data.bin"] = PAYLOAD
        path = fetch_file(remote(server, "/figshare/data.bin", "/landing/data.bin", "/mirror/data.bin"), tmp_path, progress=False, sleep=no_sleep)
        assert path.read_bytes() == PAYLOAD
        assert [p for p, _ in server.requests] == ["/figshare/data.bin", "/landing/data.bin", "/mirror/data.bin"]


def test_challenge_only_gives_a_clear_error(tmp_path):
    with FileServer() as server:
        server.challenge.add("/figshare/data.bin")
        server.html.add("/landing/data.bin")
        with pytest.raises(DownloadError) as err:
            fetch_file(remote(server, "/figshare/data.bin", "/landing/data.bin"), tmp_path, progress=False, sleep=no_sleep)
    assert "HTTP 202" in str(err.value) and "HTML page" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_resumes_with_a_range_request(tmp_path):
    with FileServer() as server:
        server.files["/a/data.bin"] = PAYLOAD
        server.truncate_once.add("/a/data.bin")
        path = fetch_file(remote(server, "/a/data.bin"), tmp_path, progress=False, sleep=no_sleep)
        assert path.read_bytes() == PAYLOAD
        ranges = [r for _, r in server.requests]
    assert ranges[0] is None and ranges[1] == f"bytes={len(PAYLOAD) // 2}-"


def test_a_stale_partial_file_is_resumed(tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:1000])
    with FileServer() as server:
        server.files["/a/data.bin"] = PAYLOAD
        fetch_file(remote(server, "/a/data.bin"), tmp_path, progress=False)
        assert server.requests == [("/a/data.bin", "bytes=1000-")]


def test_unknown_checksum_is_locked_on_first_download(tmp_path):
    with FileServer() as server:
        server.files["/a/data.bin"] = PAYLOAD
        r = remote(server, "/a/data.bin", md5=None, sha256=None, size=None)
        fetch_file(r, tmp_path, progress=False)
        lock = json.loads((tmp_path / LOCK_NAME).read_text())
        assert lock["data.bin"]["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
        (tmp_path / "data.bin").unlink()
        server.files["/a/data.bin"] = b"different bytes"
        with pytest.raises(DownloadError, match="locked on first download"):
            fetch_file(r, tmp_path, progress=False, sleep=no_sleep)


def test_server_errors_are_retried_then_reported(tmp_path):
    sleeps = []
    with FileServer() as server:
        with pytest.raises(DownloadError, match="HTTP 404"):
            fetch_file(remote(server, "/missing/data.bin"), tmp_path, progress=False, sleep=sleeps.append)
    assert sleeps == []  # a 404 is final for that URL
    r = RemoteFile(name="x.bin", urls=("http://127.0.0.1:9/x.bin",), md5="0" * 32)
    with pytest.raises(DownloadError, match="try 3"):
        fetch_file(r, tmp_path, progress=False, retries=2, backoff=0.5, sleep=sleeps.append, timeout=2)
    assert sleeps == [0.5, 1.0]


def test_offline_report_names_path_url_and_checksum(tmp_path):
    files = source_files("qm9", "deepchem")
    missing = missing_files(files, tmp_path)
    assert [m.name for m in missing] == ["gdb9.tar.gz", "uncharacterized.txt"]
    text = offline_instructions(missing, tmp_path)
    assert str(tmp_path / "gdb9.tar.gz") in text and "560f62d8e6c992ca0cf8ed8d013f9131" in text
    assert "deepchemdata" in text


def test_manifest_is_complete():
    manifest = load_manifest()
    for dataset, spec in manifest.items():
        assert spec["license"], dataset
        for source, files in spec["sources"].items():
            for f in files:
                assert f.urls or f.package or f.manual, (dataset, source, f.name)
                assert f.checksum_source, (dataset, source, f.name)
    with pytest.raises(ValueError, match="unknown keys"):
        load_manifest("x:\n  sources:\n    s:\n      - name: a\n        sha1: abc\n")
    with pytest.raises(ValueError, match="no source"):
        source_files("qm9", "zenodo")
    _ = ChecksumError
