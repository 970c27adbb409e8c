"""Atomic output: write into a temporary folder beside the target, then move into place with a manifest."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Iterator


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_inputs(paths: dict[str, Path]) -> dict[str, dict]:
    """Checksums of input files (folders: of every file inside, combined)."""
    out = {}
    for name, p in paths.items():
        p = Path(p)
        if p.is_dir():
            h = hashlib.sha256()
            files = sorted(f for f in p.rglob("*") if f.is_file())
            for f in files:
                h.update(f.name.encode())
                h.update(sha256_file(f).encode())
            out[name] = {"path": str(p), "files": len(files), "sha256": h.hexdigest()}
        elif p.is_file():
            out[name] = {"path": str(p), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
    return out


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, *, inputs: dict[str, Path] | None = None,
                      manifest_name: str = "manifest.json") -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces `target` whole, with a manifest of checksums.

    On any exception (including KeyboardInterrupt) the temporary folder is removed and `target` keeps its
    previous outputs untouched. Files in `target` that this run does not write are carried over. The swap is
    two renames with SIGINT held back, so a Ctrl-C cannot leave a half-swapped folder.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    old = target.parent / f".{target.name}.old-{os.getpid()}"
    try:
        yield tmp
        files = sorted(f for f in tmp.rglob("*") if f.is_file())
        manifest = {
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "outputs": {str(f.relative_to(tmp)): {"bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in files},
            "inputs": sha256_inputs(inputs or {}),
        }
        (tmp / manifest_name).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
        if target.is_dir():
            for f in target.rglob("*"):
                dest = tmp / f.relative_to(target)
                if f.is_file() and not dest.exists():
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(f, dest)
        _swap(tmp, target, old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _swap(new: Path, target: Path, old: Path) -> None:
    blocked = hasattr(signal, "pthread_sigmask")
    if blocked:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        moved = False
        if target.exists():
            os.rename(target, old)
            moved = True
        try:
            os.rename(new, target)
        except BaseException:
            if moved:
                os.rename(old, target)  # put the previous outputs back before anything is cleaned up
            raise
    finally:
        if blocked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
