"""A world's policy versions on disk: ``<root>/policies/<world_id>/<version>.yaml`` (SPEC §3).

``root`` is the landing-zone root (the folder holding ``runs/``, ``snapshots/``, ``policies/``).
World ids and versions are identifiers (``[A-Za-z0-9][A-Za-z0-9_.-]{0,127}``); files whose stem is
not one are ignored, and a version present as both ``.yaml`` and ``.yml`` is an error.

Version order: versions are compared with a natural sort key — digit runs compare as integers,
other runs as case-folded text, digits before text — so integer versions compare numerically
(``2 < 10``), ``1.9 < 1.10``, and ISO dates (``2024-01-15``) in calendar order. Ties (``01`` vs
``1``) fall back to the plain string. The *current* version of a world is its highest.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from qmtl_validation.core.identifiers import IDENTIFIER_PATTERN
from qmtl_validation.core.policy import Policy, PolicyError, load_policy

POLICY_SUFFIXES = (".yaml", ".yml")
_CHUNKS = re.compile(r"(\d+)")


def version_sort_key(version: str) -> tuple[Any, ...]:
    """Natural sort key of a policy version (see the module docstring)."""
    parts = []
    for chunk in _CHUNKS.split(version):
        if not chunk:
            continue
        parts.append((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk.casefold()))
    return (tuple(parts), version)


class PolicyStore:
    """Read-only access to the policies of every world under ``root/policies``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.policies_dir = self.root / "policies"
        self._cache: dict[Path, tuple[tuple[int, int], Policy]] = {}

    def worlds(self) -> list[str]:
        """World ids that have a policies folder, sorted."""
        if not self.policies_dir.is_dir():
            return []
        return sorted(p.name for p in self.policies_dir.iterdir() if p.is_dir() and IDENTIFIER_PATTERN.fullmatch(p.name))

    def _files(self, world_id: str) -> dict[str, Path]:
        if not IDENTIFIER_PATTERN.fullmatch(world_id) or world_id == "..":
            raise PolicyError(f"world_id {world_id!r} is not a valid identifier")
        folder = self.policies_dir / world_id
        files: dict[str, Path] = {}
        if not folder.is_dir():
            return files
        for path in folder.iterdir():
            if path.suffix.lower() not in POLICY_SUFFIXES or not path.is_file():
                continue
            if not IDENTIFIER_PATTERN.fullmatch(path.stem):
                continue
            if path.stem in files:
                raise PolicyError(f"policy version {path.stem!r} of world {world_id!r} exists twice: {files[path.stem].name} and {path.name}")
            files[path.stem] = path
        return files

    def versions(self, world_id: str) -> list[str]:
        """The world's policy versions, lowest first."""
        return sorted(self._files(world_id), key=version_sort_key)

    def current_version(self, world_id: str) -> str | None:
        """The highest version of the world, or None when it has no policy."""
        versions = self.versions(world_id)
        return versions[-1] if versions else None

    def path(self, world_id: str, version: str) -> Path:
        files = self._files(world_id)
        if version not in files:
            known = ", ".join(self.versions(world_id)) or "none"
            raise PolicyError(f"world {world_id!r} has no policy version {version!r} (versions: {known})")
        return files[version]

    def load(self, world_id: str, version: str | int | None = None) -> Policy:
        """Parse a version (default: the current one). Raises PolicyError when the world has no
        policy, the version does not exist or the file does not parse. Parsed policies are
        cached by file path, modification time and size."""
        if version is None:
            version = self.current_version(world_id)
            if version is None:
                raise PolicyError(f"world {world_id!r} has no policy under {self.policies_dir}")
        path = self.path(world_id, str(version))
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        policy = load_policy(path)
        self._cache[path] = (stamp, policy)
        return policy
