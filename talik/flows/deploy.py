"""Register a study's deployments on a Prefect server (``talik deploy STUDY``).

* ``monitor/<study>``: the whole study on a schedule, its parameters holding the study file's
  analysis options at deploy time (the UI shows them as a form; a rerun of a run reuses that
  run's parameters, so it reproduces it even after the file has changed);
* ``rerun-<analysis>/<study>`` for ``sentinel1``, ``longterm``, ``drivers``, ``recession`` and
  ``attribution``: one analysis with other options, unscheduled (runs from the UI).

The flows are loaded by the worker from this checkout (``flow.from_source`` on the project
folder), in a process work pool created when it does not exist.
"""

from __future__ import annotations

from pathlib import Path

from talik.config import StudyOptions, load_study

__all__ = ["PROJECT_DIR", "deploy_study", "local_server_environment"]

PROJECT_DIR = Path(__file__).resolve().parents[2]
"""The checkout holding the ``talik`` package (the workers' working folder)."""


def local_server_environment(home: Path, port: int, base: dict[str, str] | None = None
                             ) -> dict[str, str]:
    """Environment of a Prefect server on 127.0.0.1:``port`` with its state in ``home``.

    Also that of the workers and clients using it: telemetry and UI off, SQLite, results
    persisted.
    """
    import os

    env = dict(os.environ if base is None else base)
    env.pop("TALIK_REAPER_OF", None)  # each process started here watches its own children
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "true",
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(home / "storage"),
        "MPLBACKEND": "Agg",
        "PROJECT_DIR": str(PROJECT_DIR),
    })
    return env


def _ensure_pool(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))


def deploy_study(study: Path, pool: str = "talik-process", cron: str | None = "0 3 * * 1",
                 project_dir: Path = PROJECT_DIR) -> list[str]:
    """Create or update the study's deployments; return their names (``flow/deployment``)."""
    from talik.flows.monitor import monitor
    from talik.flows.rerun import RERUN_FLOWS

    path = Path(study).resolve()
    cfg = load_study(path)
    _ensure_pool(pool)
    common = {"work_pool_name": pool, "build": False, "push": False,
              "print_next_steps": False, "ignore_warnings": True}
    monitor.from_source(source=str(project_dir), entrypoint="talik/flows/monitor.py:monitor"
                        ).deploy(name=cfg.name, cron=cron, parameters={
                            "study": str(path), "refresh": False,
                            "options": StudyOptions.of(cfg).model_dump(mode="json")},
                            description=f"{cfg.title}: the whole study, on a schedule", **common)
    names = [f"monitor/{cfg.name}"]
    for section, flow in RERUN_FLOWS.items():
        flow.from_source(source=str(project_dir),
                         entrypoint=f"talik/flows/rerun.py:rerun_{section}").deploy(
            name=cfg.name, parameters={"study": str(path), "refresh": False,
                                       section: getattr(cfg, section).model_dump(mode="json")},
            description=f"{cfg.title}: the {section} analysis with other options", **common)
        names.append(f"rerun-{section}/{cfg.name}")
    return names
