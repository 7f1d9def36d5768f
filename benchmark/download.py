"""Download an MSD task archive: progress bar, resume with HTTP Range, MD5 check, safe extraction.

``python -m benchmark download --task spleen --dest data`` fetches ``Task09_Spleen.tar`` from the
MSD mirror on AWS that MONAI uses and extracts ``data/Task09_Spleen/``. The URLs and MD5 sums are
those of MONAI's ``DecathlonDataset`` (``monai/apps/datasets.py``, ``resource`` / ``md5``;
checked against MONAI's source):

==========  ===================================================================  ================================
task        URL                                                                  MD5
==========  ===================================================================  ================================
spleen      https://msd-for-monai.s3-us-west-2.amazonaws.com/Task09_Spleen.tar   410d4a301da4e5b2f6f86ec3ddba524e
colon       https://msd-for-monai.s3-us-west-2.amazonaws.com/Task10_Colon.tar    bad7a188931dc2f6acf72b08eb6202d0
==========  ===================================================================  ================================

Bytes go to ``<archive>.part``; an interrupted download is retried (``--retries``) and, when a
later run finds the ``.part`` file, continued with an HTTP ``Range`` request (a server that
ignores ranges makes it start over, said on screen). The archive is checked against its MD5
before it is extracted; a mismatch deletes it and fails. Extraction refuses absolute paths,
``..``, links leaving the folder and device files (``tarfile``'s ``data`` filter) and skips the
macOS ``._*`` files the MSD archives contain.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from tqdm import tqdm

from . import plain_help

MIRROR = "https://msd-for-monai.s3-us-west-2.amazonaws.com"
TASKS = {
    "spleen": ("Task09_Spleen", f"{MIRROR}/Task09_Spleen.tar", "410d4a301da4e5b2f6f86ec3ddba524e"),
    "colon": ("Task10_Colon", f"{MIRROR}/Task10_Colon.tar", "bad7a188931dc2f6acf72b08eb6202d0"),
}
CHUNK_BYTES = 1 << 20


class DownloadError(RuntimeError):
    """The archive could not be fetched, verified or extracted; the message says what to do."""


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, part: Path, timeout_s: float) -> None:
    """Fetch ``url`` into ``part``, continuing after the bytes already there (HTTP Range)."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing after `have`: the part file is already whole
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
    with resp:
        status = getattr(resp, "status", None)
        if have and status != 206:
            print(f"note: the server does not resume downloads; starting {part.name} over", file=sys.stderr)
            have = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + have if length is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[:-5]
        ) as bar:
            while block := resp.read(CHUNK_BYTES):
                f.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:
        raise http.client.IncompleteRead(b"", total - size)


def _hopeless(url: str, e: BaseException) -> str | None:
    """Why trying ``url`` again cannot help (an unknown host, a refused connection, a missing
    file), or None for errors worth a retry (timeouts, cut or reset connections)."""
    reason = getattr(e, "reason", e)
    host = urlparse(url).hostname
    if isinstance(reason, socket.gaierror):
        return f"the host name {host!r} could not be resolved ({reason.strerror or reason}): check the address and whether this machine is online"
    if isinstance(reason, ConnectionRefusedError):
        return f"{host} refused the connection: check the address and port"
    if isinstance(reason, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return f"{reason.strerror or reason}: {urlparse(url).path}"
    return None


def download(url: str, archive: Path, md5: str | None, retries: int = 3, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``archive`` (via ``archive.part``), verify ``md5`` (None = no check).

    Interruptions (timeouts, cut connections) are retried ``retries`` times, continuing the part
    file; errors that a retry cannot fix (unknown host, refused connection, missing file, HTTP
    errors) fail at once with a DownloadError that says what to check."""
    part = archive.with_name(archive.name + ".part")
    archive.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout_s)
            break
        except (OSError, http.client.HTTPException) as e:  # URLError, timeouts, cut connections
            got = part.stat().st_size if part.exists() else 0
            if not got and (why := _hopeless(url, e)):
                raise DownloadError(f"could not download {url}: {why}") from e
            if attempt == retries and not got:
                raise DownloadError(f"could not download {url} ({type(e).__name__}: {e}); check the address and the connection") from e
            if attempt == retries:
                raise DownloadError(
                    f"download of {url} stopped after {got:,} bytes ({type(e).__name__}: {e}); "
                    f"run the same command again to resume from {part}"
                ) from e
            what = f"interrupted at {got:,} bytes" if got else "failed before the first byte"
            print(f"download {what} ({e}); trying again (try {attempt + 2} of {retries + 1})", file=sys.stderr)
            time.sleep(min(2**attempt, 10))
    if md5:
        got = md5sum(part)
        if got != md5.lower():
            part.unlink()
            raise DownloadError(f"checksum mismatch for {url}: MD5 {got}, expected {md5}; the damaged file was deleted, run again")
    else:
        print(f"warning: no MD5 given for {url}; the archive is not verified", file=sys.stderr)
    part.replace(archive)
    return archive


def _member_filter(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
    if PurePosixPath(member.name).name.startswith("._"):
        return None  # macOS resource forks shipped inside the MSD archives
    return tarfile.data_filter(member, dest)


def extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a tar archive safely into ``dest``; returns the top-level entries it created.

    Extracts into a staging folder first, so an interrupted extraction never looks complete."""
    stage = dest / f".extract-{archive.name}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(stage, filter=_member_filter)
    except (tarfile.TarError, OSError) as e:
        shutil.rmtree(stage, ignore_errors=True)
        raise DownloadError(f"could not extract {archive}: {e}") from e
    made = []
    for entry in sorted(stage.iterdir()):
        target = dest / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        elif target.exists() or target.is_symlink():
            target.unlink()
        entry.replace(target)
        made.append(target)
    stage.rmdir()
    return made


def fetch_task(dest: Path, task: str | None = None, url: str | None = None, md5: str | None = None, retries: int = 3, keep_archive: bool = False) -> list[Path]:
    """Download and extract an MSD task (or any tar at ``url``) into ``dest``; returns what was extracted."""
    if task:
        folder, default_url, default_md5 = TASKS[task]
        if url is None and (dest / folder / "dataset.json").is_file():
            print(f"{dest / folder} is already there; nothing to do")
            return [dest / folder]
        url, md5 = url or default_url, md5 or (default_md5 if url is None else None)
    if not url:
        raise DownloadError("give --task spleen|colon or --url")
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: only http(s):// and file:// URLs are supported")
    archive = dest / PurePosixPath(urlparse(url).path).name
    created = [p for p in (dest, *dest.parents) if not p.exists()]  # folders this call makes, deepest first
    try:
        download(url, archive, md5, retries)
        made = extract(archive, dest)
    except BaseException:
        for folder in created:  # leave no empty folder behind (a .part to resume keeps its folder)
            try:
                folder.rmdir()
            except OSError:
                break
        raise
    if not keep_archive:
        archive.unlink()
    return made


def add_parser(sub) -> None:
    p = sub.add_parser("download", help="fetch an MSD task (resume, MD5, safe extraction)", description=plain_help(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), help="MSD task to fetch")
    p.add_argument("--dest", default="data", help="folder to extract into (default ./data)")
    p.add_argument("--url", help="another http(s):// or file:// URL of a tar archive")
    p.add_argument("--md5", help="expected MD5 of the archive (default: the task's)")
    p.add_argument("--retries", type=int, default=3, help="automatic resumes after an interruption (default 3)")
    p.add_argument("--keep-archive", action="store_true", help="keep the .tar after extraction")
    p.set_defaults(func=_main)


def _main(a: argparse.Namespace) -> None:
    try:
        made = fetch_task(Path(a.dest), a.task, a.url, a.md5, a.retries, a.keep_archive)
    except DownloadError as e:
        sys.exit(f"error: {e}")
    for m in made:
        print(f"extracted: {m}")
