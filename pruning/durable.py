"""Durable artifact writes: a reader sees the old version or the complete new one, never a part.

Every writer of a file or folder that outlives the command (tickets, materialized models, bundles,
reports, job status, the model cache) goes through here, so there is one place that gets it right:
write into a temporary sibling (same directory, so the rename stays on one file system), fsync the
data, give it the umask's permissions (mkstemp/mkdtemp make owner-only files; our artifacts are meant
to be shared), rename it into place, then fsync the parent directory so the rename itself survives a
power loss. Without the fsyncs a crash can leave a renamed but empty file.

Temporary names are `.<final name>.tmp-<pid>-<random>`: hidden from listings, and a crashed writer's
leftovers can be recognised (its pid is dead) and swept by `remove_stale_temps`.

`crash_point(label)` is a deterministic kill hook for the crash-consistency tests: when the
environment variable TICKETLAB_CRASH_AT names the label (optionally `label@N` for its N-th hit in
this process), the process kills itself with SIGKILL right there, as `kill -9` would.
TICKETLAB_CRASH_TRACE=FILE lists the labels a clean run passes (see tests/test_crash_matrix.py).
TICKETLAB_FAULT_AT=label raises ENOSPC there (a full disk where no small file system can be mounted).
TICKETLAB_HOLD_AT=label=FILE makes the process wait at the label's first hit until FILE exists, so a
test can line several real processes up at the same point and release them at once (races).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import TicketLabError
from .procs import pid_alive

CRASH_ENV = "TICKETLAB_CRASH_AT"
TRACE_ENV = "TICKETLAB_CRASH_TRACE"
HOLD_ENV = "TICKETLAB_HOLD_AT"
FAULT_ENV = "TICKETLAB_FAULT_AT"
HOLD_MAX_S = 300.0
_TMP_MARK = ".tmp-"
_hits: dict[str, int] = {}


def crash_point(label: str) -> None:
    """Die here, as with `kill -9`, when TICKETLAB_CRASH_AT asks for this label (test hook). With
    TICKETLAB_CRASH_TRACE=FILE every label passed is appended to FILE, so a test can choose its kill
    points from a clean run instead of guessing them."""
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a") as f:
            f.write(label + "\n")
    _hold(label)
    if os.environ.get(FAULT_ENV) == label:
        raise OSError(errno.ENOSPC, "No space left on device (injected by $TICKETLAB_FAULT_AT)")
    want = os.environ.get(CRASH_ENV)
    if not want:
        return
    name, _, nth = want.partition("@")
    if name != label:
        return
    _hits[label] = _hits.get(label, 0) + 1
    if _hits[label] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


FULL = (errno.ENOSPC, errno.EDQUOT)


def mount_point(path: str | Path) -> Path:
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    while not os.path.ismount(p):
        p = p.parent
    return p


FULL_TEXT = ("No space left on device", "Disk quota exceeded", "os error 28", "StorageFull")


def is_full(e: BaseException) -> bool:
    """A full file system, however the library reports it (OSError, DuckDB's IO errors, safetensors' Rust
    errors carry the OS message rather than the errno)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:  # the cause chain, once (chains can loop)
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in FULL:
            return True
        if any(t in str(e) for t in FULL_TEXT):
            return True
        e = e.__cause__ or e.__context__
    return False


def raise_if_full(e: BaseException, path: str | Path) -> None:
    """Raise one clear error for a full file system (or quota) at `path`, naming both; any other error is
    left to the caller (`except OSError as e: raise_if_full(e, path); raise`)."""
    if isinstance(e, TicketLabError) or not is_full(e):
        return  # already one clear error, or not a full disk
    quota = isinstance(e, OSError) and e.errno == errno.EDQUOT or "quota" in str(e)
    mount = mount_point(path)
    try:
        st = os.statvfs(mount)
        free = f"{st.f_bavail * st.f_frsize / 1e6:.1f} MB free of {st.f_blocks * st.f_frsize / 1e6:.1f} MB"
    except OSError:
        free = "free space unknown"
    what = "quota exceeded" if quota else "no space left"
    raise TicketLabError(f"the file system at {mount} is full ({what}, {free}) while writing {path}: free space there "
                         f"(or point the state directory elsewhere) and run the command again; nothing was written "
                         f"in place of what was there.") from e


def make_parent(path: Path) -> None:
    """Create `path`'s folder; when something on the way is a file, one clear error naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as e:
        blocker = next((p for p in (path.parent, *path.parent.parents) if p.exists() and not p.is_dir()), path.parent)
        raise TicketLabError(f"cannot write {path}: {blocker} is a file, not a folder; choose another path.") from e
    except OSError as e:
        raise_if_full(e, path)
        raise


def _hold(label: str) -> None:
    name, _, go = os.environ.get(HOLD_ENV, "").partition("=")
    if name != label or not go or _hits.get("hold:" + label):
        return
    _hits["hold:" + label] = 1
    deadline = time.monotonic() + HOLD_MAX_S
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.02)


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~_umask()


def dir_mode() -> int:
    return 0o777 & ~_umask()


def fsync_dir(directory: str | Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file and folder under root (bottom-up), without following links."""
    for dirpath, _dirs, files in os.walk(root, topdown=False):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p):
                continue
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(dirpath)


def _tmp_prefix(final: Path) -> str:
    return f".{final.name}{_TMP_MARK}{os.getpid()}-"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically and durably, with the umask's permissions."""
    path = Path(path)
    make_parent(path)
    remove_stale_temps(path.parent, path.name)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), dir=path.parent)
    except OSError as e:
        raise_if_full(e, path)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            crash_point("durable.file.write")
            os.fsync(f.fileno())
        crash_point("durable.file.before_rename")
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise_if_full(e, path)
        raise
    fsync_dir(path.parent)
    crash_point("durable.file.after_rename")


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | Path, obj, **json_kwargs) -> None:
    """json.dumps(obj, **json_kwargs) written atomically, with a final newline."""
    atomic_write_text(path, json.dumps(obj, **json_kwargs) + "\n")


def _relax_permissions(root: Path) -> None:
    fm, dm = file_mode(), dir_mode()
    for dirpath, _dirs, files in os.walk(root):
        os.chmod(dirpath, dm)
        for f in files:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                os.chmod(p, fm)


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE): readers never see neither.
    False where the system cannot, and the caller falls back to two renames."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        fn = _libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(str(a)), at_fdcwd, os.fsencode(str(b)), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, getattr(errno, "ENOTSUP", errno.EINVAL)):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@contextlib.contextmanager
def atomic_dir(final: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a folder in a temporary sibling and move it into place as a whole.

    On clean exit every file is fsynced, permissions follow the umask, and the folder is renamed to
    `final`. If `final` exists: with replace=True it is swapped out (atomically where the kernel can)
    and removed; otherwise FileExistsError is raised and the new folder is discarded (the caller
    decides, e.g. a ticket with the same id is the same content). On an exception the temporary
    folder is removed and `final` is untouched."""
    final = Path(final)
    make_parent(final)
    remove_stale_temps(final.parent, final.name)  # what a killed earlier attempt left
    try:
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), dir=final.parent))
    except OSError as e:
        raise_if_full(e, final)
        raise
    try:
        yield tmp
        crash_point("durable.dir.write")
        _relax_permissions(tmp)
        fsync_tree(tmp)
        crash_point("durable.dir.before_rename")
        _move_into_place(tmp, final, replace)
    except BaseException as e:
        raise_if_full(e, final)  # whatever library was writing into the folder, a full disk is named
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(final.parent)
    crash_point("durable.dir.after_rename")


def _move_into_place(tmp: Path, final: Path, replace: bool) -> None:
    if not (final.exists() or final.is_symlink()):
        try:
            os.rename(tmp, final)
            return
        except OSError as e:  # someone else got there between the check and the rename
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    if not replace:
        raise FileExistsError(errno.EEXIST, "already exists", str(final))
    if final.is_dir() and not final.is_symlink() and _exchange(tmp, final):
        # tmp now holds the old folder; the finally of atomic_dir removes it.
        return
    old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(final), dir=final.parent))
    os.rename(final, old / "old")
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old / "old", final)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def is_temp_name(name: str) -> bool:
    return name.startswith(".") and _TMP_MARK in name


def remove_stale_temps(directory: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary leftovers of writers that died (their pid is no longer running); only those
    for the final `name` when given."""
    directory = Path(directory)
    removed: list[Path] = []
    if not directory.is_dir():
        return removed
    prefix = f".{name}{_TMP_MARK}" if name is not None else None
    for p in directory.iterdir():
        if not is_temp_name(p.name) or (prefix is not None and not p.name.startswith(prefix)):
            continue
        pid_part = p.name.split(_TMP_MARK, 1)[1].split("-", 1)[0]
        if not pid_part.isdigit() or int(pid_part) == os.getpid() or pid_alive(int(pid_part)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        removed.append(p)
    return removed
