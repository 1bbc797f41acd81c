"""Every service has the same rooms with the same jobs (docs/architecture.md), and the Serve application the
chart deploys names a builder that exists.

settings.py (one `…Settings.from_env()`), service.py (the logic), server.py (the gRPC surface), main.py (the
process: `main(port=None) -> int`), __main__.py (`run_service(name, main)`), commands.py (the CLI, whose `serve`
is the shared `add_serve_command`).
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import REPO, SUBCHARTS, UMBRELLA, Helm, offline_helm  # noqa: E402

from recsys import cli  # noqa: E402

SERVICES = REPO / "services"
ROOMS = ("settings.py", "service.py", "server.py", "main.py", "__main__.py", "commands.py")


@pytest.mark.parametrize("service", SUBCHARTS)
def test_each_service_has_the_same_rooms(service: str):
    folder = SERVICES / service
    assert [room for room in ROOMS if not (folder / room).is_file()] == [], f"{service} lacks a room"


SETTINGS = {"candidates": "CandidateSettings", "features": "FeatureSettings", "gateway": "GatewaySettings",
            "monitoring": "MonitoringSettings", "ranking": "RankingSettings"}


@pytest.mark.parametrize("service", SUBCHARTS)
def test_settings_has_the_service_settings_built_from_the_environment(service: str):
    settings = getattr(importlib.import_module(f"recsys.{service}.settings"), SETTINGS[service])
    assert inspect.ismethod(settings.from_env), f"{SETTINGS[service]}.from_env is a classmethod"
    assert "from_env" in vars(settings)


@pytest.mark.parametrize("service", SUBCHARTS)
def test_main_is_the_process_and_dunder_main_only_runs_it(service: str):
    main = importlib.import_module(f"recsys.{service}.main").main
    port = inspect.signature(main).parameters.get("port")
    assert port is not None and port.default is None, f"recsys.{service}.main.main(port=None, ...)"
    source = (SERVICES / service / "__main__.py").read_text()
    assert f"from recsys.{service}.main import main" in source
    assert f'run_service("{service}", main)' in source


@pytest.mark.parametrize("service", SUBCHARTS)
def test_serve_command_comes_from_the_shared_helper(service: str):
    assert "add_serve_command(" in (SERVICES / service / "commands.py").read_text()
    args = cli.build_parser().parse_args([service, "serve", "--port", "1234"])
    assert args.port == 1234 and callable(args.func)


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    root = tmp_path_factory.mktemp("helm")
    return offline_helm(root)


def test_the_rayservice_import_path_names_an_application_builder(helm: Helm):
    manifests = helm.template(UMBRELLA, values=[REPO / "helm" / UMBRELLA / "values-production.yaml"])
    services = [m for m in manifests if m.get("kind") == "RayService"]
    assert services, "the production values deploy ranking as a RayService"
    for rayservice in services:
        for app in yaml.safe_load(rayservice["spec"]["serveConfigV2"])["applications"]:
            module, _, attr = app["import_path"].partition(":")
            builder = getattr(importlib.import_module(module), attr)
            assert callable(builder), app["import_path"]
