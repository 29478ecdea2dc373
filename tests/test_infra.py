"""The container and cluster manifests agree with each other and with the deployments.

No container runtime or cluster is available to the tests, so these check what can go wrong
silently: a renamed work pool, a mount path that differs between the Prefect worker and the
Dask workers, a scheduler address that names no service. ``dask_cluster`` itself is run
against a real in-process ``distributed`` scheduler.
"""

from __future__ import annotations

import re
from pathlib import Path

import dask
import dask.array
import pytest
import yaml

from talik.tasks.cluster import dask_cluster

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deployment_pool() -> str:
    spec = yaml.safe_load((ROOT / "deployments" / "prefect.yaml").read_text())
    pools = {d["work_pool"]["name"] for d in spec["deployments"]}
    assert len(pools) == 1
    return pools.pop()


def test_dockerfile_worker_serves_the_deployments_pool() -> None:
    text = (INFRA / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd, "Dockerfile has no exec-form CMD"
    args = yaml.safe_load(cmd.group(1))
    assert args[:3] == ["prefect", "worker", "start"]
    assert args[args.index("--pool") + 1] == _deployment_pool()
    # Everything the deployments' entrypoint and studies need is copied into the image.
    for needed in ("talik", "studies", "deployments", "pyproject.toml"):
        assert re.search(rf"^COPY .*\b{re.escape(needed)}\b", text, re.M), needed


def test_compose_stack_is_consistent() -> None:
    compose = yaml.safe_load((INFRA / "compose.yaml").read_text())
    services = compose["services"]
    pool = _deployment_pool()
    worker = services["worker"]
    script = worker["command"][-1]
    assert f"work-pool create {pool}" in script and f"--pool {pool}" in script
    assert "deployments/prefect.yaml" in script
    env = worker["environment"]
    host = re.match(r"http://([\w-]+):4200/api", env["PREFECT_API_URL"]).group(1)
    assert host in services
    scheduler = re.match(r"tcp://([\w-]+):8786", env["DASK_SCHEDULER_ADDRESS"]).group(1)
    assert scheduler in services
    assert "--port" in services[scheduler]["command"]
    # Dask workers read the staged Zarr at the paths the Prefect worker wrote them to.
    data_mount = next(v for v in worker["volumes"] if v.startswith("talik-data:"))
    assert data_mount in services["dask-worker"]["volumes"]
    assert "postgresql+asyncpg://" in (
        services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    for vol in ("talik-data", "talik-releases", "prefect-db"):
        assert vol in compose["volumes"]


def test_kubernetes_manifests_are_consistent() -> None:
    kustomization = yaml.safe_load((INFRA / "k8s" / "kustomization.yaml").read_text())
    docs = [d for f in kustomization["resources"] for d in _docs(INFRA / "k8s" / f)]
    by_kind: dict[str, dict[str, dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    config = by_kind["ConfigMap"]["talik-config"]["data"]
    scheduler = re.match(r"tcp://([\w-]+):(\d+)", config["DASK_SCHEDULER_ADDRESS"])
    service = by_kind["Service"][scheduler.group(1)]
    assert int(scheduler.group(2)) in [p["port"] for p in service["spec"]["ports"]]
    deployments = by_kind["Deployment"]
    for dep in deployments.values():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        claims = {v["persistentVolumeClaim"]["claimName"]
                  for v in dep["spec"]["template"]["spec"].get("volumes", [])}
        assert claims <= set(by_kind["PersistentVolumeClaim"])
    assert service["spec"]["selector"].items() <= (
        deployments["dask-scheduler"]["spec"]["template"]["metadata"]["labels"].items())
    worker = deployments["talik-prefect-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert worker["command"][worker["command"].index("--pool") + 1] == _deployment_pool()
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    dask_worker = deployments["dask-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert {m["mountPath"] for m in dask_worker["volumeMounts"]} == {mounts["data"]}
    assert all(c["spec"]["accessModes"] == ["ReadWriteMany"]
               for c in by_kind["PersistentVolumeClaim"].values())


def test_dask_cluster_uses_threads_without_a_scheduler_address() -> None:
    with dask.config.set({"scheduler-address": None}), dask_cluster() as address:
        assert address is None


def test_dask_cluster_connects_to_the_configured_scheduler() -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None, protocol="tcp", host="127.0.0.1"
                                  ) as cluster:
        with dask.config.set({"scheduler-address": cluster.scheduler_address}):
            with dask_cluster() as address:
                assert address == cluster.scheduler_address
                client = distributed.get_client()
                assert client.scheduler.address == cluster.scheduler_address
                assert dask.array.ones(10, chunks=5).sum().compute() == 10


def test_unreachable_scheduler_names_the_address() -> None:
    address = "tcp://127.0.0.1:9"  # discard port: nothing listens
    with dask.config.set({"scheduler-address": address}):
        with pytest.raises(ConnectionError, match=re.escape(address)):
            with dask_cluster(timeout="2s"):
                pass
