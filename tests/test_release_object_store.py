"""The release store in object storage: a local S3 server (moto) on 127.0.0.1 stands in."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from talik.config import load_study
from talik.tasks.publish import read_release

SECRET = "not-a-real-secret-3f9c"


@pytest.fixture()
def s3_endpoint(monkeypatch):
    """A moto S3 server on a free loopback port, with a bucket, and the AWS variables set."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "talik-test", "AWS_SECRET_ACCESS_KEY": SECRET,
                        "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint,
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="talik-releases")
    yield endpoint
    server.stop()


def test_releases_commit_and_open_from_an_s3_store(prefect_server, tiny_study, s3_endpoint):
    from talik.flows.monitor import monitor
    from talik.tasks.release_store import open_release

    url = "s3://talik-releases/studies/tiny"
    text = tiny_study.read_text().replace('release_dir = "', f'release_store = "{url}"\nrelease_dir = "')
    tiny_study.write_text(text)
    cfg = load_study(tiny_study)
    assert cfg.stores.release_store == url

    outcome = monitor(study=str(tiny_study))
    assert outcome.created
    manifest = read_release(cfg.stores.release_dir, outcome.release.id)
    assert manifest["store"]["url"] == url
    assert not (Path(cfg.stores.release_dir) / "store.icechunk").exists()  # nothing local
    # The release opens from the bucket at its tag, found through the manifest.
    via_store = open_release(cfg.stores.release_dir, outcome.release.id)
    nc = Path(outcome.release.path) / "products" / "sentinel1.nc"
    with xr.open_dataset(nc) as product:
        for name in ("displacement", "velocity", "mask"):
            np.testing.assert_array_equal(via_store[name].values, product[name].values)
    # Credentials come from the environment and are written nowhere.
    for path in Path(outcome.release.path).rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".toml"):
            assert SECRET not in path.read_text(), path
    assert SECRET not in json.dumps(manifest)


def test_a_store_url_with_credentials_in_it_is_refused(tmp_path):
    from talik.config import Stores

    with pytest.raises(ValueError, match="no credentials"):
        Stores(work_dir=tmp_path, release_dir=tmp_path,
               release_store="s3://key:secret@bucket/prefix")
    with pytest.raises(ValueError, match="expected a local path"):
        Stores(work_dir=tmp_path, release_dir=tmp_path, release_store="ftp://host/x")
