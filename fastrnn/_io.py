"""Atomic writes: the one way fastrnn replaces a file (or a folder) on disk.

Every file fastrnn writes whole (checkpoints, JSON reports, loss plots) goes through
``write_atomically`` / ``atomic_write``: the content is written to a temporary file in the
same folder, flushed and fsynced, then renamed over the target (``os.replace`` is atomic
on one file system), and the folder is fsynced so the rename itself survives a crash.
A crash, a Ctrl-C or a full disk while writing leaves the previous file whole and no
temporary file behind (except after kill -9, see below).

A temporary file is named ``.tmp-<name>-<pid>@<host>-<random>``. One left behind by a
writer that was killed (kill -9) is removed by the next write of the same target from
the same host once its pid is no longer alive (``remove_stale_temp_files``). Folders
written as a whole (the synthetic dataset) use the same naming and cleanup rule
(``make_temp_dir``).

The final file gets the ordinary permissions of a new file, ``0o666 & ~umask`` (the
kernel applies the umask when the temporary file is created). An ``OSError`` raised
while writing names the target file (``err.filename``), not the temporary one.
"""
import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
import time

__all__ = ["write_atomically", "atomic_write", "remove_stale_temp_files", "make_temp_dir",
           "fsync_tree", "fsync_folder", "write_json", "json_default"]

_TEMP = ".tmp-"


def _temp_prefix(path):
    """'.tmp-<name>-': the start of every temporary name of ``path``."""
    return _TEMP + os.path.basename(path) + "-"


def _owner():
    """'<pid>@<host>': who is writing a temporary file (host without '-' for parsing)."""
    return f"{os.getpid()}@{socket.gethostname().replace('-', '_')}"


def _temp_name(path):
    """A new temporary path next to ``path``: '.tmp-<name>-<pid>@<host>-<random>'."""
    return os.path.join(os.path.dirname(path),
                        _temp_prefix(path) + _owner() + "-" + secrets.token_hex(4))


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, someone else's
        return True
    except (OSError, OverflowError):   # not a pid this OS knows: not a live writer
        return False
    return True


_PROCESS_START = time.time()


def _is_stale(full, rest, host):
    """Whether the temporary file or folder ``full`` (``rest``: its name after the
    prefix) was left by a writer that is gone."""
    parts = rest.split("-")
    if len(parts) == 2 and "@" in parts[0]:          # '<pid>@<host>-<random>'
        pid, _, owner_host = parts[0].partition("@")
        return owner_host == host and pid.isdigit() and not _pid_alive(int(pid))
    if len(parts) == 1:                               # the naming before pids: '<random>'
        return os.path.getmtime(full) < _PROCESS_START
    return False      # '-' in the rest: a temporary file of another name ('<name>-2', ...)


def remove_stale_temp_files(path):
    """Remove temporary files (or folders) of ``path`` left by killed writers; returns
    their names.

    A temporary ``.tmp-<name>-<pid>@<host>-<random>`` is stale when it was written on
    this host by a pid that no longer runs. Files of the old naming
    (``.tmp-<name>-<random>``, no owner) are stale once older than this process.
    Files of live writers, of other hosts and of other targets are left alone.
    """
    path = os.path.abspath(os.fspath(path))
    folder, prefix = os.path.dirname(path), _temp_prefix(path)
    host = _owner().split("@", 1)[1]
    removed = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(prefix)]
    except OSError:
        return removed
    for name in names:
        full = os.path.join(folder, name)
        try:
            if _is_stale(full, name[len(prefix):], host):
                if os.path.isdir(full) and not os.path.islink(full):
                    shutil.rmtree(full)
                else:
                    os.unlink(full)
                removed.append(name)
        except OSError:
            pass   # gone meanwhile, or not ours to remove
    return removed


def fsync_folder(folder):
    """Make a rename in ``folder`` durable (best effort: not every OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_fsync_folder = fsync_folder


def _naming_target(err, path, tmp):
    """``err`` (an OSError) as one that names ``path`` (it may name nothing or the
    temporary file); None when it already names something else."""
    if err.filename is not None and os.fspath(err.filename) != tmp:
        return None
    if err.errno is None:
        return OSError(f"cannot write {path}: {err}")
    return OSError(err.errno, err.strerror or os.strerror(err.errno), path)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) \
    | getattr(os, "O_BINARY", 0)


def _create_temp(path):
    """Create and open a new temporary file next to ``path`` -> (fd, its path)."""
    for _ in range(100):
        tmp = _temp_name(path)
        try:
            # 0o666: the kernel applies the umask, as for any new file
            return os.open(tmp, _CREATE, 0o666), tmp
        except FileExistsError:
            continue
        except OSError as err:   # name the target, not the temporary file
            raise OSError(err.errno, err.strerror, path) from err
    raise FileExistsError(errno.EEXIST, "no free temporary file name", path)


@contextlib.contextmanager
def atomic_write(path, mode="wb", encoding=None):
    """``with atomic_write(path) as f: f.write(...)``: the file object of a temporary file
    next to ``path``; when the block ends without an exception the file is flushed, fsynced
    and renamed over ``path``. On any exception (KeyboardInterrupt too) the temporary file
    is removed and ``path`` is left as it was.

    mode: 'wb' (bytes) or 'w' (text; encoding defaults to UTF-8). Stale temporary files of
    ``path`` (see remove_stale_temp_files) are removed first.
    """
    if mode not in ("wb", "w", "wt"):
        raise ValueError(f"atomic_write: mode must be 'wb', 'w' or 'wt', got {mode!r}")
    if mode == "wb" and encoding is not None:
        raise ValueError("atomic_write: binary mode does not take an encoding")
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = None
    try:
        fd, tmp = _create_temp(path)
        if mode == "wb":
            f = os.fdopen(fd, "wb")
        else:
            f = os.fdopen(fd, "w", encoding=encoding or "utf-8")
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(err, OSError):
            named = _naming_target(err, path, tmp)
            if named is not None:
                raise named from err
        raise
    fsync_folder(folder)


def write_atomically(path, write):
    """``write(file)`` into a temporary file next to ``path`` (opened 'wb'), fsync, rename it
    over ``path``: see ``atomic_write``. On any error ``path`` is unchanged."""
    with atomic_write(path, "wb") as f:
        write(f)


def make_temp_dir(path):
    """A new empty folder next to ``path`` named as a temporary file of it
    (``.tmp-<name>-<pid>@<host>-<random>``), with the permissions the umask gives; stale
    ones of killed writers are removed first. The caller fills it and renames it to
    ``path`` (after ``fsync_tree``), or removes it."""
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    remove_stale_temp_files(path)
    for _ in range(100):
        tmp = _temp_name(path)
        try:
            os.mkdir(tmp, 0o777)   # the kernel applies the umask
            return tmp
        except FileExistsError:
            continue
        except OSError as err:
            raise OSError(err.errno, err.strerror, path) from err
    raise FileExistsError(errno.EEXIST, "no free temporary folder name", path)


def fsync_tree(folder):
    """fsync every file under ``folder`` and the folders themselves (before renaming a
    folder written as a whole into place)."""
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_folder(root)


def json_default(value):
    """``json.dumps(default=...)`` for NumPy scalars and arrays (as Python numbers, lists)."""
    import numpy as np
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def write_json(path, doc, indent=2):
    """Write ``doc`` as a UTF-8 JSON document to ``path`` atomically (NumPy values as
    Python ones)."""
    text = json.dumps(doc, indent=indent, default=json_default)
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))
