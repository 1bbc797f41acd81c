"""Versioned model registry on the file system.

  <root>/v0001/ ... v0002/ ...   one folder per training run: the bundle files plus manifest.json
                                 (version, created_at, code version, data fingerprint, config, metrics,
                                 timings, files)
  <root>/latest                  text file naming the version serving should load
  <root>/history.jsonl           every event of the registry's life: each move of `latest` (publish / set /
                                 rollback / promote, with `from` and `to`), and each gate decision, canary start,
                                 promotion and rollback (`kind`, `version`, ...), one JSON object a line
  <root>/rollout.json            the canary in progress, if any (`recsys.model.rollout`)

A version is written into a temporary folder and renamed into place, and `latest` is replaced
atomically, so readers never see a half-written version.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from recsys.model.layout import MANIFEST

VERSION_RE = re.compile(r"^v(\d{4,})$")
LATEST = "latest"
HISTORY = "history.jsonl"


class RegistryError(ValueError):
    """Unknown version, empty registry, or a folder that is not a registry/version."""


class Registry:
    """The registry rooted at `root` (created on first write)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self) -> list[str]:
        """Complete versions, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p.name for p in self.root.iterdir() if VERSION_RE.match(p.name) and (p / MANIFEST).exists()]
        return sorted(found, key=lambda v: int(VERSION_RE.match(v).group(1)))

    def latest(self) -> str | None:
        path = self.root / LATEST
        if not path.exists():
            return None
        return path.read_text().strip() or None

    def path(self, version: str | None = None) -> Path:
        """Folder of `version` (default: latest)."""
        version = version or self.latest()
        if version is None:
            raise RegistryError(f"no model version in {self.root} (train one with `recsys train`)")
        path = self.root / version
        if not (path / MANIFEST).exists():
            raise RegistryError(f"unknown model version {version!r} in {self.root}")
        return path

    def manifest(self, version: str | None = None) -> dict:
        return json.loads((self.path(version) / MANIFEST).read_text())

    def create(self, write: Callable[[Path], list[str]], manifest: dict, publish: bool = True) -> str:
        """Write a new version: `write(folder)` puts the files there; the manifest is completed and saved.

        Returns the version name; `publish` moves `latest` to it.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            files = write(tmp)
            while True:
                existing = [int(VERSION_RE.match(p.name).group(1)) for p in self.root.iterdir()
                            if VERSION_RE.match(p.name)]
                version = f"v{max(existing, default=0) + 1:04d}"
                full = {"version": version, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        **manifest, "files": files}
                (tmp / MANIFEST).write_text(json.dumps(full, indent=2, default=str))
                try:
                    os.rename(tmp, self.root / version)
                    break
                except OSError:
                    if not (self.root / version).exists():
                        raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if publish:
            self.set_latest(version, reason="publish")
        return version

    def set_latest(self, version: str, reason: str = "set") -> None:
        """Point `latest` at `version` (atomic replace) and log the move."""
        self.path(version)
        previous = self.latest()
        tmp = self.root / f".latest-{os.getpid()}"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / LATEST)
        self.record("latest", reason=reason, **{"from": previous, "to": version})

    def record(self, kind: str, **fields: object) -> dict:
        """Append one event (`kind` plus fields) to the history; returns it."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": kind, **fields}
        with (self.root / HISTORY).open("a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def history(self, kind: str | None = None) -> list[dict]:
        """Every event of the history, oldest first (only those of `kind` when given)."""
        path = self.root / HISTORY
        if not path.exists():
            return []
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in events if kind is None or e.get("kind") == kind]

    def update_manifest(self, version: str, **fields: object) -> dict:
        """Merge `fields` into a version's manifest (atomic replace); returns the new manifest."""
        path = self.path(version) / MANIFEST
        manifest = {**json.loads(path.read_text()), **fields}
        tmp = path.with_name(f".{MANIFEST}.{os.getpid()}")
        tmp.write_text(json.dumps(manifest, indent=2, default=str))
        os.replace(tmp, path)
        return manifest

    def rollback(self, to: str | None = None) -> str:
        """Point `latest` at `to`, or by default at the newest version older than the current one."""
        if to is None:
            current = self.latest()
            versions = self.versions()
            if current not in versions:
                raise RegistryError(f"no current version to roll back from in {self.root}")
            older = versions[: versions.index(current)]
            if not older:
                raise RegistryError(f"{current} is the oldest version in {self.root}; nothing to roll back to")
            to = older[-1]
        self.set_latest(to, reason="rollback")
        return to


def resolve_model_dir(path: str | Path, version: str | None = None) -> Path:
    """A registry root (-> its latest or `version`) or a version folder itself."""
    path = Path(path)
    if (path / MANIFEST).exists() and version is None:
        return path
    if not path.is_dir():
        raise RegistryError(f"model folder {path} does not exist")
    return Registry(path).path(version)
