"""Every process that an image or a chart workload starts can run: one entry per service, the same everywhere.

The Dockerfile's targets and the rendered chart (default and production values) name what each container runs:
`python -m recsys.<service>`, the health probe module, or the `recsys` console script with a subcommand. Each
named module must exist and import as `python -m` would load it, each `recsys` command line must parse, and each
service process must really start (exit 2 naming the variable on a bad port, not "No module named ...").
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # helm_support sits beside this file (importlib import mode)
from helm_support import REPO, SUBCHARTS, UMBRELLA, Helm, offline_helm, pod_templates  # noqa: E402

from recsys import cli  # noqa: E402

DOCKERFILE = REPO / "docker" / "Dockerfile"
PRODUCTION = REPO / "helm" / UMBRELLA / "values-production.yaml"


def dockerfile_commands() -> dict[str, list[str]]:
    """The exec-form ENTRYPOINT + CMD of each target of docker/Dockerfile."""
    commands: dict[str, list[str]] = {}
    stage, entry, cmd = "", [], []
    for line in DOCKERFILE.read_text().splitlines():
        if match := re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.IGNORECASE):
            if stage:
                commands[stage] = entry + cmd
            stage, entry, cmd = match.group(1), [], []
        elif match := re.match(r"(ENTRYPOINT|CMD)\s+(\[.*\])\s*$", line):
            (entry if match.group(1) == "ENTRYPOINT" else cmd)[:] = json.loads(match.group(2))
    commands[stage] = entry + cmd
    return {name: argv for name, argv in commands.items() if argv}


def assert_runnable(argv: list[str], where: str) -> None:
    """argv is `python -m MODULE ...` with a module python can run, or a `recsys` command line that parses."""
    if argv[:2] == ["python", "-m"]:
        module = argv[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{where}: no module {module}"
        if spec.submodule_search_locations is not None:  # a package: python -m runs its __main__
            main = f"{module}.__main__"
            assert importlib.util.find_spec(main) is not None, f"{where}: No module named {main}"
            source = Path(importlib.util.find_spec(main).origin).read_text()
            assert 'if __name__ == "__main__":' in source, f"{where}: {main} does nothing when run"
            importlib.import_module(main)
        else:
            importlib.import_module(module)
        return
    assert argv[0] == "recsys", f"{where}: runs {argv[0]!r}, neither `python -m` nor the recsys CLI"
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["recsys"] == "recsys.cli:main"
    if len(argv) > 1:
        try:
            cli.build_parser().parse_args(argv[1:])
        except SystemExit as exc:  # --help exits 0: the image's default command, a valid one
            if exc.code == 0:
                return
            pytest.fail(f"{where}: `{' '.join(argv)}` is not a recsys command line (exit {exc.code})")


def test_every_dockerfile_target_runs_its_service_module():
    commands = dockerfile_commands()
    assert set(commands) == {*SUBCHARTS, "jobs"}
    for target, argv in commands.items():
        if target in SUBCHARTS:
            assert argv == ["python", "-m", f"recsys.{target}"], target
        assert_runnable(argv, f"Dockerfile target {target}")
    health = re.findall(r"CMD (python -m \S+)", DOCKERFILE.read_text())
    assert health, "every service target has a HEALTHCHECK"
    for line in set(health):
        assert_runnable(line.split(), "Dockerfile HEALTHCHECK")


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    root = tmp_path_factory.mktemp("helm")
    return offline_helm(root)


@pytest.mark.parametrize("variant", ["default", "production"])
def test_every_chart_container_runs_an_entry_that_exists(helm: Helm, variant: str):
    manifests = helm.template(UMBRELLA, values=[PRODUCTION] if variant == "production" else [])
    checked = 0
    for pod in pod_templates(manifests):
        for container in pod.containers():
            image = container.get("image", "")
            if "/recsys-" not in image:
                continue  # redis, kafka tools: not our image
            target = image.rsplit("/recsys-", 1)[1].split(":")[0]
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            if not container.get("command"):  # the image's own ENTRYPOINT/CMD
                argv = dockerfile_commands()[target] if not container.get("args") else [
                    *dockerfile_commands()[target][:1], *container["args"]]
            assert_runnable(argv, f"{pod.owner} container {container['name']}")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                if exec_ := (container.get(probe) or {}).get("exec"):
                    assert_runnable(exec_["command"], f"{pod.owner} {container['name']} {probe}")
            checked += 1
    assert checked >= len(SUBCHARTS)


SERVICE_PORT_VARS = {service: f"RECSYS_{service.upper()}_PORT" for service in SUBCHARTS}


@pytest.mark.parametrize("service", SUBCHARTS)
def test_python_dash_m_starts_each_service_process(service: str, tmp_path: Path):
    """`python -m recsys.<service>` really runs the service's main: bad configuration is a clear exit 2.

    The port is not a number and nothing was ever trained or materialized here: whichever the service meets
    first, it exits 2 with one line naming itself, not a traceback and not "No module named ...".
    """
    variable = SERVICE_PORT_VARS[service]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RECSYS_VAR_DIR": str(tmp_path), variable: "not-a-port",
           "RAY_USAGE_STATS_ENABLED": "0"}
    done = subprocess.run([sys.executable, "-m", f"recsys.{service}"], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"recsys {service}: error:" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
