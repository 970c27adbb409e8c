"""The one atomic writer: every output folder is an *output set* — exactly what one run wrote, plus its manifest.

A run stages its files in a hidden folder beside the target (``.{name}.tmp-*``) and swaps it in with two
renames, recorded in a journal (``.{name}.swap``) so that a run killed at any moment is completed or rolled
back by the next one. Nothing of the user's is ever moved aside: a target that is a file, an input of the
run, or a folder holding files no geoaccess manifest lists is refused before any work (``claim_output``).
Concurrent runs on one folder are kept apart by a lock file (``.{name}.lock``, ``flock``).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterable, Iterator

from .errors import GeoaccessError, Interrupted, OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs are not coordinated
    fcntl = None

log = logging.getLogger("geoaccess")

MANIFEST = "manifest.json"
#: Inside a staging folder until its swap: marks it as geoaccess's own (debris a later run may delete).
STAGING_MARK = ".geoaccess-staging"
#: Signals held back during a swap (SIGKILL cannot be; the journal covers it).
SWAP_SIGNALS = {signal.SIGINT, signal.SIGTERM} | ({signal.SIGHUP} if hasattr(signal, "SIGHUP") else set())
#: File-system failures that are the output location's, not a bug: one `OutputError` line, exit 2.
_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG, errno.EBUSY,
                  errno.EXDEV, errno.ENOTDIR, errno.EISDIR, errno.EDQUOT, errno.EMLINK, errno.EIO, errno.EFBIG}
#: Causes that libraries (GDAL, SQLite) report as text rather than as an OSError.
_CAUSE_TEXT = {"No space left on device": "no space left on device (the disk is full)",
               "database or disk is full": "no space left on device (the disk is full)",
               "Disk quota exceeded": "disk quota exceeded",
               "Read-only file system": "read-only file system",
               "Permission denied": "permission denied",
               "File name too long": "file name too long"}
_STAGING_NAME = r"\.{name}\.(tmp|files|export)-[A-Za-z0-9_]{{8}}"


# ----------------------------------------------------------------------------- checksums and provenance

def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


_KNOWN_SUMS: dict[tuple, str] = {}   # (path, size, mtime_ns, inode) → SHA-256, filled by prefetch_checksums
_PREFETCH: list[threading.Thread] = []


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _folder_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file())


def prefetch_checksums(paths) -> None:
    """Start hashing input files (and the files of input folders) in a background thread.

    :func:`sha256_inputs` takes a prefetched sum only while the file's size, mtime and inode are unchanged, so
    a file edited meanwhile is hashed again. Runs while the engine computes; errors are left to the real pass.
    """
    def work(items):
        for p in items:
            try:
                files = _folder_files(p) if p.is_dir() else [p] if p.is_file() else []
                for f in files:
                    key = _stat_key(f)
                    if key not in _KNOWN_SUMS:
                        _KNOWN_SUMS[key] = sha256_file(f)
            except OSError:
                continue

    t = threading.Thread(target=work, args=([Path(p) for p in paths],), name="geoaccess-checksums", daemon=True)
    _PREFETCH.append(t)
    t.start()


def _checksum(path: Path) -> str:
    known = _KNOWN_SUMS.get(_stat_key(path))
    return known if known is not None else sha256_file(path)


def sha256_inputs(paths: dict[str, Path]) -> dict[str, dict]:
    """Checksums of input files (folders: of every file inside, combined); missing paths are skipped."""
    while _PREFETCH:
        _PREFETCH.pop().join()
    out = {}
    for name, p in paths.items():
        p = Path(p)
        if p.is_dir():
            h = hashlib.sha256()
            files = _folder_files(p)
            for f in files:
                h.update(str(f.relative_to(p)).encode())
                h.update(_checksum(f).encode())
            out[name] = {"path": str(p), "files": len(files), "sha256": h.hexdigest()}
        elif p.is_file():
            out[name] = {"path": str(p), "bytes": p.stat().st_size, "sha256": _checksum(p)}
    return out


def code_version() -> dict:
    """The package version and, when run from a git checkout, its commit and whether it had local edits."""
    from . import __version__

    out: dict = {"geoaccess": __version__}
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            run = dict(cwd=root, capture_output=True, text=True, timeout=10)
            commit = subprocess.run(["git", "rev-parse", "HEAD"], **run).stdout.strip()
            if commit:
                dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "geoaccess"],
                                       **run).stdout.strip()
                out["git_commit"], out["git_dirty"] = commit, bool(dirty)
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def read_manifest(folder: Path) -> dict | None:
    """The manifest of an output set (None if the folder holds none or it is unreadable)."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) and isinstance(m.get("outputs"), dict) else None


def verify_set(folder: Path) -> list[str]:
    """Problems of an output set against its manifest (empty when every listed file has its size and checksum)."""
    folder = Path(folder)
    m = read_manifest(folder)
    if m is None:
        return [f"{folder}: no readable {MANIFEST}"]
    problems = []
    for rel, facts in m["outputs"].items():
        f = folder / rel
        if not f.is_file():
            problems.append(f"{f}: missing")
        elif f.stat().st_size != facts.get("bytes") or sha256_file(f) != facts.get("sha256"):
            problems.append(f"{f}: differs from the manifest")
    for rel in m.get("sets", {}):
        problems += verify_set(folder / rel)
    return problems


# ----------------------------------------------------------------------------- test seam

def test_pause(point: str) -> None:
    """Stop at a named point when $GEOACCESS_TEST_PAUSE names it (tests kill the process there).

    Writes the pid to $GEOACCESS_TEST_PAUSE_FLAG and waits until that file is removed. Points:
    ``before-write``, ``during-write``, ``before-swap``, ``mid-swap``, ``after-swap``.
    """
    if os.environ.get("GEOACCESS_TEST_PAUSE") != point:
        return
    flag = Path(os.environ["GEOACCESS_TEST_PAUSE_FLAG"])
    flag.write_text(str(os.getpid()))
    while flag.exists():
        time.sleep(0.02)


# ----------------------------------------------------------------------------- checks before any work

def resolve_target(target: str | Path) -> Path:
    """The absolute folder a run writes: a symlink is followed (written through, the link kept)."""
    p = Path(os.path.abspath(Path(target).expanduser()))
    return Path(os.path.realpath(p))


def check_target(target: str | Path, protected: Iterable[Path] = ()) -> Path:
    """Refuse, with one line, a target geoaccess must not write; returns the real folder.

    Refused: an existing file (or anything not a folder); a folder that is, holds or lies inside a
    `protected` path (the run's inputs, data folder, config); a mount point (it cannot be swapped);
    a name too long for the file system; a place that cannot be written (read-only, permission).
    """
    shown = str(target)
    real = resolve_target(target)
    if os.path.lexists(real) and not real.is_dir():
        raise OutputError(shown, "exists and is not a folder; geoaccess writes a folder of outputs and never "
                                 "replaces a file: choose another output folder")
    for p in protected:
        rp = resolve_target(p)
        if rp == real:
            raise OutputError(shown, f"is an input of this run ({p}); outputs would replace it: choose another "
                                     f"output folder")
        if real in rp.parents:
            raise OutputError(shown, f"holds an input of this run ({p}); outputs would replace it: choose another "
                                     f"output folder")
        if rp in real.parents:
            raise OutputError(shown, f"lies inside an input of this run ({p}); outputs must not mix with the "
                                     f"inputs: choose a folder outside it")
    if real.is_dir() and os.path.ismount(real):
        raise OutputError(shown, "is a mount point; geoaccess replaces its output folder whole by renaming, which a "
                                 "mount point cannot be: use a folder inside it")
    existing = next(p for p in (real, *real.parents) if p.exists())
    if not existing.is_dir():
        raise OutputError(shown, f"cannot be created: {existing} is a file, not a folder")
    limit = _name_max(existing)
    for part in real.relative_to(existing).parts + (real.name,):
        if len(os.fsencode(part)) + 24 > limit:
            raise OutputError(shown, f"file name too long: '{part[:40]}…' is {len(os.fsencode(part))} bytes; the "
                                     f"file system allows {limit}, and geoaccess needs 24 more for its temporary "
                                     f"folder beside it")
    writable = real.parent if real.parent.exists() else existing
    if not os.access(writable, os.W_OK | os.X_OK):
        raise OutputError(shown, f"cannot write in {writable}: {_why_not_writable(writable)}")
    return real


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _why_not_writable(folder: Path) -> str:
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (OSError, AttributeError):
        pass
    return "permission denied"


def foreign_files(folder: Path) -> list[Path]:
    """Files under `folder` that no geoaccess manifest there lists (the user's: never replaced or deleted).

    A folder with a manifest is an output set: its files must be listed in it (older versions' extra
    ``manifest_*.json`` count too); nested sets are checked on their own; staging debris is ignored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    listed: set[str] = set()
    for m in folder.glob("manifest*.json"):
        try:
            data = json.loads(m.read_text(encoding="utf-8"))
            listed |= set(data.get("outputs", {})) | {m.name}
        except (OSError, ValueError, AttributeError):
            pass
    out: list[Path] = []

    def walk(d: Path, rel: str) -> None:
        for entry in sorted(d.iterdir()):
            name = f"{rel}{entry.name}"
            if _is_debris(entry):
                continue
            if entry.is_dir() and not entry.is_symlink():
                if read_manifest(entry) is not None:
                    out.extend(foreign_files(entry))
                else:
                    walk(entry, name + "/")
            elif name not in listed:
                out.append(entry)

    walk(folder, "")
    return out


def _is_debris(entry: Path) -> bool:
    """A lock, journal or staging folder of geoaccess's own (named after a sibling output folder)."""
    n = entry.name
    if not n.startswith("."):
        return False
    if n.endswith((".lock", ".swap")) and entry.is_file():
        return True
    return entry.is_dir() and (entry / STAGING_MARK).is_file()


# ----------------------------------------------------------------------------- the lock

class _Lock:
    """An exclusive ``flock`` on ``.{name}.lock`` beside the folder; the file is removed on release."""

    def __init__(self, real: Path, shown: str):
        self.path = real.parent / f".{real.name}.lock"
        self.shown = shown
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "another process"
                os.close(fd)
                raise OutputError(self.shown, f"another geoaccess run ({holder}) is writing this folder; wait for it "
                                              f"to finish or choose another output folder") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a file a finishing run unlinked after we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}, since {time.strftime('%H:%M:%S')}".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self.fd)
        self.fd = None


_HELD: dict[Path, _Lock] = {}


@contextlib.contextmanager
def claim_output(target: str | Path, *, protected: Iterable[Path] = (), command: str | None = None) -> Iterator[Path]:
    """Check `target`, lock it, finish or undo any interrupted run there, refuse foreign files; yields the real path.

    Call before any work so a bad output folder costs nothing. Claims nest: a claim inside a held claim
    of the same folder or a parent only re-checks. `command` (when given) must match the command of the
    output set already there: one folder never mixes the outputs of two commands.
    """
    shown = str(target)
    real = check_target(target, protected)
    covered = any(p in _HELD for p in (real, *real.parents))
    lock = None
    created = [p for p in real.parents if not p.exists()][::-1]  # made for the lock; removed if the run fails
    if not covered:
        lock = _Lock(real, shown)
        with _as_output_error(shown):
            real.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        _HELD[real] = lock
    try:
        with _as_output_error(shown):
            recover(real)
        foreign = foreign_files(real)
        if foreign:
            more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
            raise OutputError(shown, f"holds files geoaccess did not write ({foreign[0]}{more}); it replaces its "
                                     f"output folder whole and will not delete them: move them or choose another "
                                     f"output folder")
        m = read_manifest(real)
        if command and m is not None and m.get("command", "gaps") != command:
            raise OutputError(shown, f"holds the outputs of `{m.get('command', 'gaps')}` ({real / MANIFEST}); "
                                     f"`{command}` writes a folder of its own: choose another output folder")
        yield real
    finally:
        if lock is not None:
            _HELD.pop(real, None)
            lock.release()
        if not real.exists():
            for p in reversed(created):
                with contextlib.suppress(OSError):
                    p.rmdir()  # only if still empty


# ----------------------------------------------------------------------------- recovery

def recover(real: Path) -> None:
    """Complete or roll back a swap killed midway (from its journal); delete staging folders of dead runs.

    Call only while holding the folder's lock. Nested output sets with journals are recovered too.
    """
    parent, name = real.parent, real.name
    journal = parent / f".{name}.swap"
    if journal.is_file():
        try:
            j = json.loads(journal.read_text(encoding="utf-8"))
            new, old = parent / j["new"], parent / j["old"]
        except (OSError, ValueError, KeyError, TypeError):
            new = old = None
        if new is not None:
            if new.is_dir() and read_manifest(new) is not None and not verify_set(new):
                (new / STAGING_MARK).unlink(missing_ok=True)
                if real.exists() and not old.exists():
                    os.rename(real, old)
                if not real.exists():
                    os.rename(new, real)
                    log.warning("completed the output swap of an interrupted run in %s", real)
            elif not real.exists() and old.is_dir():
                os.rename(old, real)
                log.warning("rolled back the output swap of an interrupted run in %s", real)
            for d in (new, old):
                shutil.rmtree(d, ignore_errors=True)
        journal.unlink(missing_ok=True)
    if parent.is_dir():
        pattern = re.compile(_STAGING_NAME.format(name=re.escape(name)))
        for d in parent.iterdir():
            if d.is_dir() and d.name.startswith(f".{name}.") and ((d / STAGING_MARK).is_file() or pattern.fullmatch(d.name)):
                log.info("removing %s, left by an interrupted run", d)
                shutil.rmtree(d, ignore_errors=True)
            elif d.is_dir() and re.fullmatch(rf"\.{re.escape(name)}\.old-\d+", d.name) and read_manifest(d) is not None:
                if not real.exists():  # an older geoaccess killed mid-swap: its previous outputs
                    os.rename(d, real)
                    log.warning("restored %s from %s, left by an interrupted run", real, d.name)
                else:
                    shutil.rmtree(d, ignore_errors=True)
    if real.is_dir():
        for j in list(real.rglob(".*.swap")):
            recover(j.parent / j.name[1:-len(".swap")])


# ----------------------------------------------------------------------------- writing

_STAGING: list[Path] = []


@contextlib.contextmanager
def atomic_output_dir(target: str | Path, *, inputs: dict[str, Path] | None = None, command: str | None = None,
                      parameters: dict | None = None, derived_from: Path | None = None,
                      protected: Iterable[Path] = (), manifest_name: str = MANIFEST) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `target` whole, with a manifest; on failure nothing changes.

    The new folder holds exactly what this run wrote, plus `manifest.json`: command, parameters, code
    version, size and SHA-256 of every output and of every input in `inputs` (which `target` may not be,
    hold or lie inside, nor any path in `protected`). Nested output sets of other commands that stand on
    their own (traveltime, proposals) are kept; sets made from the replaced outputs (`derived_from`: map,
    export) are dropped. The folder keeps its mode; a symlinked target is written through.
    On any exception, SIGINT/SIGTERM/SIGHUP included, the staging folder is removed and `target` is left
    byte-identical; a write failure of the file system (disk full, read-only, permission, name too long)
    becomes an `OutputError` naming `target` and the cause. A SIGKILL is repaired by the next claim.
    """
    inputs = dict(inputs or {})
    shown = str(target)
    with claim_output(target, protected=[*inputs.values(), *protected], command=command) as real:
        tmp = old = journal = None
        try:
            with _as_output_error(shown):
                real.parent.mkdir(parents=True, exist_ok=True)
                mode = (real.stat().st_mode if real.is_dir() else 0o777 & ~_umask()) & 0o7777
                tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-", dir=real.parent))
                (tmp / STAGING_MARK).write_text(f"pid {os.getpid()}\n")
            _STAGING.append(tmp)
            test_pause("before-write")
            with _as_output_error(shown):
                yield tmp
            _STAGING.remove(tmp)
            with _as_output_error(shown):
                kept = _keep_nested_sets(real, tmp)
                files = sorted(f for f in tmp.rglob("*") if f.is_file() and f.name != STAGING_MARK
                               and not any(k in f.relative_to(tmp).parents for k in map(Path, kept)))
                _fsync_all(files)
                manifest = {
                    "command": command or "gaps",
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "code": code_version(),
                    "parameters": parameters or {},
                    "outputs": {str(f.relative_to(tmp).as_posix()): {"bytes": f.stat().st_size,
                                                                     "sha256": sha256_file(f)} for f in files},
                    "sets": kept,
                    "inputs": sha256_inputs(inputs),
                }
                if derived_from is not None:
                    src = resolve_target(derived_from)
                    manifest["derived_from"] = {"folder": str(src), "manifest_sha256": sha256_file(src / MANIFEST)}
                mpath = tmp / manifest_name
                mpath.write_text(json.dumps(manifest, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
                _fsync(mpath)
                test_pause("before-swap")
                raise_if_stopped()  # a stop signal whose exception was lost: never publish that run's outputs
                old = real.parent / f".{real.name}.old-{os.getpid()}-{os.urandom(3).hex()}"
                journal = real.parent / f".{real.name}.swap"
                _swap(tmp, real, old, journal, mode)
            test_pause("after-swap")
        finally:
            if tmp in _STAGING:
                _STAGING.remove(tmp)
            if old is not None and old.exists() and not real.exists():
                # a swap whose rollback failed too: the previous outputs and the journal stay for the next run
                log.error("%s: the previous outputs are in %s; the next run puts them back", shown, old)
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)  # this run failed: roll back, never complete it
            else:
                for d in (tmp, old):
                    if d is not None:
                        shutil.rmtree(d, ignore_errors=True)
                if journal is not None:
                    journal.unlink(missing_ok=True)


def in_staging(folder: Path) -> bool:
    """True when `folder` is (inside) a staging folder this process is writing."""
    folder = Path(os.path.abspath(folder))
    return any(s == folder or s in folder.parents for s in _STAGING)


@contextlib.contextmanager
def atomic_files(folder: str | Path, *, stale=None) -> Iterator[Path]:
    """Yield a staging folder whose files, on success, are moved into `folder` (same names replaced).

    For library calls that add files to a folder rather than own it (`export_layers` outside a run).
    `stale(new_names)`: names in `folder` the new files make stale (removed at the move). Inside a staging
    folder of `atomic_output_dir` the files are written in place: the outer swap makes them atomic.
    """
    folder = Path(folder)
    if in_staging(folder):
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        return
    parent = Path(os.path.abspath(folder)).parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.files-", dir=parent))
    try:
        (tmp / STAGING_MARK).write_text(f"pid {os.getpid()}\n")
        _STAGING.append(tmp)
        yield tmp
        _STAGING.remove(tmp)
        (tmp / STAGING_MARK).unlink()
        folder.mkdir(exist_ok=True)
        for name in (stale({f.name for f in tmp.iterdir()}) if stale else ()):
            (folder / name).unlink(missing_ok=True)
        for f in sorted(tmp.iterdir()):
            _fsync(f)  # on disk before it is in view (the GeoPackage writer skips SQLite's own syncs)
            os.replace(f, folder / f.name)
    finally:
        if tmp in _STAGING:
            _STAGING.remove(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` (mode 644), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are for sharing
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _keep_nested_sets(real: Path, tmp: Path) -> dict[str, str]:
    """Hard-link (else copy) the nested output sets of `real` that stand on their own into `tmp`."""
    kept: dict[str, str] = {}
    if not real.is_dir():
        return kept
    for m in sorted(real.rglob(MANIFEST)):
        d = m.parent
        rel = d.relative_to(real)
        if d == real or any(part.startswith(".") for part in rel.parts):
            continue  # the folder itself, or inside staging debris
        if any(str(p.as_posix()) in kept for p in rel.parents):
            continue  # linked with the set around it
        data = read_manifest(d)
        if data is None or (data.get("derived_from") or {}).get("folder") == str(real):
            continue  # made from the outputs being replaced (a map, an export): stale with them
        if (tmp / rel).exists():
            continue  # this run wrote that folder anew
        for src in sorted(d.rglob("*")):
            if any(part.startswith(".") for part in src.relative_to(d).parts):
                continue
            dst = tmp / rel / src.relative_to(d)
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)
        kept[str(rel.as_posix())] = data.get("command", "gaps")
    return kept


_held = 0
_deferred: list[int] = []
#: Every stop signal the CLI's handler took, in order (cleared when the handlers are installed).
received: list[int] = []


def stop_signal_handler(signum, frame) -> None:
    """The CLI's handler for SIGINT, SIGTERM and SIGHUP: stop the run (`Interrupted`), except mid-swap.

    During a swap the signal is recorded and raised once the swap is done, so the folder is never left
    half-swapped (a signal mask alone does not do: another thread of the process may take the signal).
    The signal is also recorded in :data:`received`: an exception raised while the main thread runs a C
    callback (numba's compiler calling back into Python, say) is printed and dropped by Python, so
    :func:`raise_if_stopped` raises it again at the next step and before any output is published.
    """
    received.append(signum)
    if _held:
        _deferred.append(signum)
        return
    raise Interrupted(signum)


def raise_if_stopped() -> None:
    """`Interrupted` for a stop signal taken earlier whose exception was lost (see :func:`stop_signal_handler`)."""
    if received and not _held:
        raise Interrupted(received[0])


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    global _held
    masked = hasattr(signal, "pthread_sigmask")
    if masked:
        signal.pthread_sigmask(signal.SIG_BLOCK, SWAP_SIGNALS)
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if masked:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, SWAP_SIGNALS)
        if not _held and _deferred:
            signum = _deferred[0]
            _deferred.clear()
            raise Interrupted(signum)


def _swap(new: Path, target: Path, old: Path, journal: Path, mode: int) -> None:
    """Move `new` into place as `target` (the previous one to `old`), with the stop signals held back."""
    with _signals_held():
        journal.write_text(json.dumps({"new": new.name, "old": old.name, "pid": os.getpid()}), encoding="utf-8")
        _fsync(journal)
        (new / STAGING_MARK).unlink()
        os.chmod(new, mode)
        moved = False
        try:
            if target.exists():
                os.rename(target, old)
                moved = True
            test_pause("mid-swap")
            os.rename(new, target)
        except BaseException:
            if moved and not target.exists():
                os.rename(old, target)  # put the previous outputs back before anything is cleaned up
            raise
        _fsync(target.parent)


def _fsync_all(paths) -> None:
    """fsync every file, a few at a time (the waits for the disk overlap; fsync releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    paths = list(paths)
    if len(paths) < 2:
        for p in paths:
            _fsync(p)
        return
    with ThreadPoolExecutor(min(8, len(paths)), thread_name_prefix="geoaccess-fsync") as pool:
        list(pool.map(_fsync, paths))


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _as_output_error(shown: str) -> Iterator[None]:
    """Turn a file-system failure (disk full, read-only, permission, name too long) into one `OutputError` line."""
    try:
        yield
    except GeoaccessError:
        raise
    except OSError as exc:
        if exc.errno is None:  # a library's own I/O error (rasterio's RasterioIOError): judged by its text below
            _raise_by_text(shown, exc)
        if exc.errno not in _OUTPUT_ERRNOS:
            raise
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != shown else ""
        raise OutputError(shown, f"cannot write the outputs{_outside_staging(where)}: "
                                 f"{_CAUSE_BY_ERRNO.get(exc.errno, exc.strerror or str(exc)).lower()}; "
                                 f"the previous outputs are unchanged") from None
    except Exception as exc:
        _raise_by_text(shown, exc)


def _raise_by_text(shown: str, exc: BaseException) -> None:
    """An `OutputError` when a library's error text (or a full disk) names an output-location cause; else re-raise."""
    text = " ".join(str(e) for e in _chain(exc))
    cause = next((c for t, c in _CAUSE_TEXT.items() if t.lower() in text.lower()), None)
    if cause is None and _disk_full(shown):  # e.g. GDAL's "Write failed": the cause went to its log only
        cause = _CAUSE_TEXT["No space left on device"]
    if cause is None:
        raise exc
    raise OutputError(shown, f"cannot write the outputs: {cause}; the previous outputs are unchanged") from None


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and those it was raised from or during."""
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _disk_full(shown: str, below_bytes: int = 1 << 20) -> bool:
    """True when the file system holding ``shown`` (or its nearest existing parent) has under 1 MB free."""
    p = Path(shown)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free < below_bytes
    except OSError:
        return False


_CAUSE_BY_ERRNO = {errno.ENOSPC: "no space left on device (the disk is full)", errno.EDQUOT: "disk quota exceeded",
                   errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                   errno.EPERM: "operation not permitted", errno.ENAMETOOLONG: "file name too long"}


def _outside_staging(where: str) -> str:
    """The path as it will be once swapped in: the staging folder's random name replaced by the target's."""
    return re.sub(r"/\.([^/]*)\.(tmp|files)-[A-Za-z0-9_]{8}", r"/\1", where)
