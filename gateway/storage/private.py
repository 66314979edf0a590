"""Directories and files only the gateway's user may read.

The state directory holds alarm data, notification rows and ack-link grants: another local user
must not read them, whatever the process umask is (``parkwatch run`` sets 0077, but a library
caller or a test may not). So directories are made 0700 and files 0600 explicitly, and an
existing one that is open to group or others is tightened.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
#: The umask ``parkwatch run`` and ``parkwatch demo`` set before anything creates files.
UMASK = 0o077


def private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents 0700; tighten ``path`` itself if it is open to
    group or others (parents that already exist are the operator's, left alone)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        # exist_ok: another task may create it between the check and here.
        d.mkdir(mode=DIR_MODE, exist_ok=True)
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask, chmod's is not
    tighten(path, DIR_MODE)


def private_file(path: Path) -> None:
    """Create ``path`` empty 0600 if missing, else tighten it to 0600 (e.g. an SQLite database
    before SQLite opens it: its -wal and -shm files then get the same mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    os.close(fd)
    tighten(path, FILE_MODE)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to a (new or truncated) 0600 file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tighten(path, FILE_MODE)


def tighten(path: Path, mode: int) -> None:
    """Drop group and other bits from an existing file or directory (one left by an older
    version that did not set modes)."""
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077:
        os.chmod(path, mode)
        log.info("%s was mode %o, now %o (only the gateway's user may read it)",
                 path, current, mode)
