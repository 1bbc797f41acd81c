"""Run a rendered pod template with Docker, as a kubelet would run it: the chart's own command, args and env.

Each container of the template becomes `docker run` with its command and args, the environment of the ConfigMaps
and Secrets it names (plus explicit overrides for what a cluster supplies: Service names resolve to 127.0.0.1),
its user and group, a read-only root filesystem, dropped capabilities, no privilege escalation, and each volume
as a host folder (an emptyDir per pod, a PVC per claim, Secret and ConfigMap volumes as files). Init containers
run first, in order, and must exit 0. Every container joins the network namespace of one holder container that
has only a loopback interface, as the containers of a pod share one: nothing reaches or touches the host network.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Manifest = dict[str, Any]
UID = 10001


class DockerError(AssertionError):
    """docker exited non-zero; the message holds its stderr."""


@dataclass
class Docker:
    """The docker CLI against one engine (DOCKER_HOST)."""

    host: str
    binary: str = field(default_factory=lambda: shutil.which("docker") or "docker")

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        proc = subprocess.run([self.binary, *args], capture_output=True, text=True, env=self.env(), timeout=timeout)
        if check and proc.returncode != 0:
            raise DockerError(f"docker {' '.join(args[:3])}...: {proc.stderr.strip()[-2000:]}")
        return proc.stdout.strip()

    def logs(self, name: str, tail: int = 40) -> str:
        proc = subprocess.run([self.binary, "logs", "--tail", str(tail), name], capture_output=True, text=True,
                              env=self.env(), timeout=30)
        return (proc.stdout + proc.stderr)[-6000:]


def config_data(manifests: list[Manifest]) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, str]]]:
    """The data of every ConfigMap and Secret, by name."""
    configmaps = {m["metadata"]["name"]: dict(m.get("data") or {}) for m in manifests if m["kind"] == "ConfigMap"}
    secrets: dict[str, dict[str, str]] = {}
    for m in manifests:
        if m["kind"] == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (m.get("data") or {}).items()}
            secrets[m["metadata"]["name"]] = {**data, **(m.get("stringData") or {})}
    return configmaps, secrets


@dataclass
class PodRunner:
    """Runs pods of rendered manifests in one loopback-only network namespace."""

    docker: Docker
    workdir: Path
    network: str
    configmaps: dict[str, dict[str, str]]
    secrets: dict[str, dict[str, str]]
    rewrite: Callable[[str], str]  # a value as this namespace needs it (Service names -> 127.0.0.1)
    started: list[str] = field(default_factory=list)

    def container_env(self, container: dict[str, Any], pod: str, extra: dict[str, str]) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            if ref := source.get("configMapRef"):
                env.update(self.configmaps[ref["name"]])
            elif ref := source.get("secretRef"):
                env.update(self.secrets.get(ref["name"], {}))
        for item in container.get("env") or []:
            if "value" in item:
                env[item["name"]] = str(item["value"])
                continue
            source = item.get("valueFrom") or {}
            if ref := source.get("secretKeyRef") or source.get("configMapKeyRef"):
                table = self.secrets if "secretKeyRef" in source else self.configmaps
                value = table.get(ref["name"], {}).get(ref["key"])
                if value is None and not ref.get("optional"):
                    raise AssertionError(f"{pod}: {item['name']} names {ref['name']}/{ref['key']}: not rendered")
                if value is not None:
                    env[item["name"]] = value
            elif ref := source.get("fieldRef"):
                env[item["name"]] = {"metadata.name": pod, "metadata.namespace": "recsys"}.get(
                    ref["fieldPath"], "127.0.0.1")
        env = {key: self.rewrite(value) for key, value in env.items()}
        env.update(extra)
        # $(VAR) names an earlier variable of the container, expanded as the kubelet does.
        return {key: re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
                for key, value in env.items()}

    def volume_dir(self, pod: str, volume: dict[str, Any]) -> Path:
        """A host folder standing in for the volume, owned by the pod's user (fsGroup)."""
        if claim := (volume.get("persistentVolumeClaim") or {}).get("claimName"):
            path = self.workdir / "claims" / claim
        else:
            path = self.workdir / "pods" / pod / volume["name"]
        if not path.exists():
            path.mkdir(parents=True)
            for source_key, table in (("secret", self.secrets), ("configMap", self.configmaps)):
                if source := volume.get(source_key):
                    name = source.get("secretName") or source.get("name")
                    for key, value in table.get(name, {}).items():
                        (path / key).write_text(value)
            os.chown(path, UID, UID)
            for child in path.iterdir():
                os.chown(child, UID, UID)
        return path

    def docker_args(self, pod: str, spec: dict[str, Any], container: dict[str, Any], name: str,
                    extra: dict[str, str]) -> list[str]:
        pod_sc = spec.get("securityContext") or {}
        sc = container.get("securityContext") or {}
        uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
        gid = sc.get("runAsGroup", pod_sc.get("runAsGroup", uid))
        assert uid is not None and uid != 0, f"{pod}/{container['name']}: runs as root"
        args = ["--name", name, "--network", f"container:{self.network}", "--user", f"{uid}:{gid}",
                "--group-add", str(pod_sc.get("fsGroup", gid))]
        if sc.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if "ALL" in ((sc.get("capabilities") or {}).get("drop") or []):
            args += ["--cap-drop", "ALL"]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if memory := ((container.get("resources") or {}).get("limits") or {}).get("memory"):
            args += ["--memory", memory.replace("Gi", "g").replace("Mi", "m")]
        volumes = {v["name"]: v for v in spec.get("volumes") or []}
        for mount in container.get("volumeMounts") or []:
            host = self.volume_dir(pod, volumes[mount["name"]])
            if sub := mount.get("subPath"):
                host = host / sub
            args += ["-v", f"{host}:{mount['mountPath']}{':ro' if mount.get('readOnly') else ''}"]
        env_file = self.workdir / "env" / f"{name}.env"
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text("".join(f"{k}={v}\n" for k, v in self.container_env(container, pod, extra).items()))
        args += ["--env-file", str(env_file)]
        command = container.get("command") or []
        if command:
            args += ["--entrypoint", command[0]]
        return [*args, container["image"], *command[1:], *(container.get("args") or [])]

    def run_pod(self, pod: str, spec: dict[str, Any], env: dict[str, str] | None = None,
                init_timeout_s: float = 900) -> list[str]:
        """Run the init containers to completion (in order), then start the containers; returns their names.

        env: variables a cluster would supply differently for this pod (its own metrics port, say).
        """
        extra = env or {}
        for init in spec.get("initContainers") or []:
            name = f"{pod}-init-{init['name']}"
            self.docker("rm", "-f", name, check=False)
            self.docker("run", "-d", *self.docker_args(pod, spec, init, name, extra))
            self.started.append(name)
            code = self.docker("wait", name, timeout=init_timeout_s)
            assert code == "0", f"init container {name} exited {code}:\n{self.docker.logs(name)}"
        names = []
        for container in spec["containers"]:
            name = f"{pod}-{container['name']}"
            self.docker("rm", "-f", name, check=False)
            self.docker("run", "-d", *self.docker_args(pod, spec, container, name, extra))
            self.started.append(name)
            names.append(name)
        return names

    def run_job(self, pod: str, spec: dict[str, Any], timeout_s: float = 1800) -> None:
        """Run a Job's pod to completion: every container must exit 0."""
        for name in self.run_pod(pod, spec, init_timeout_s=timeout_s):
            code = self.docker("wait", name, timeout=timeout_s)
            assert code == "0", f"job container {name} exited {code}:\n{self.docker.logs(name)}"

    def stop_all(self) -> None:
        for name in reversed(self.started):
            self.docker("rm", "-f", name, check=False, timeout=60)
        self.started.clear()


def holder_pid(docker: Docker, name: str) -> int:
    """The PID of a running container (its network namespace is /proc/PID/ns/net)."""
    return int(docker("inspect", "-f", "{{.State.Pid}}", name))


def in_netns(pid: int, argv: list[str], timeout: float = 60, env: dict[str, str] | None = None,
             check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a host program inside the network namespace of process pid (its loopback is the pod's)."""
    proc = subprocess.run(["nsenter", "-t", str(pid), "-n", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if check and proc.returncode != 0:
        output = proc.stdout[-2000:] + proc.stderr[-2000:]
        raise AssertionError(f"{' '.join(argv[:2])} exited {proc.returncode}: {output}")
    return proc
