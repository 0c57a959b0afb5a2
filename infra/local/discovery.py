"""Where a running offline stack's side services are, for local tools in other processes.

The fake Stripe and the other stand-ins listen on free ports chosen at start-up, so a tool that knows only
the API's URL (``python -m infra.local trigger --url http://127.0.0.1:3000``) cannot guess them. While it
runs, :class:`infra.local.server.LocalServer` writes them to a small file named after its API port, in a
directory of this user's under the system's temporary directory, and deletes it when it stops:

    {"api": "http://127.0.0.1:3000", "pid": 4242, "services": {"stripe": "http://127.0.0.1:53411", ...}}

A file left by a server that died without stopping names a process that is gone, and is not used.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit


def directory() -> Path:
    return Path(tempfile.gettempdir()) / f'atelier-local-{getpass.getuser()}'


def path_for(api_url: str) -> Path:
    return directory() / f'api-{urlsplit(api_url).port or 80}.json'


def publish(api_url: str, services: dict[str, str]) -> Path:
    """Announce the services of the stack serving ``api_url`` (this process) until :func:`withdraw`."""
    path = path_for(api_url)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_suffix(f'.{os.getpid()}.tmp')
    temporary.write_text(json.dumps({'api': api_url, 'pid': os.getpid(), 'services': services}))
    temporary.replace(path)
    return path


def withdraw(api_url: str) -> None:
    """Remove this process's announcement for ``api_url`` (another process's is left alone)."""
    path = path_for(api_url)
    found = _read(path)
    if found is not None and found.get('pid') == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def services(api_url: str) -> dict[str, str]:
    """The side services of the running stack that serves ``api_url`` ({} when none is known)."""
    found = _read(path_for(api_url))
    if found is None or not _alive(found.get('pid')):
        return {}
    listed = found.get('services')
    return {str(k): str(v) for k, v in listed.items()} if isinstance(listed, dict) else {}


def _read(path: Path) -> dict[str, object] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True
