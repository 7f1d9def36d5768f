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
macOS ``._*`` files the MSD archives contain. It goes to a staging folder, and every task folder
extracted must be complete (``dataset.json``, a non-empty ``imagesTr/``, every image and label
``dataset.json`` lists) before anything is moved into ``--dest``: a truncated archive can end
cleanly at a member boundary. A damaged, truncated or unsafe archive fails in one line, nothing
is extracted and the downloaded archive is deleted (run again to fetch it anew).
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import shutil
import socket
import sys
import tarfile
import time
import urllib.error
import urllib.request
import zlib
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


class DamagedArchive(DownloadError):
    """The archive itself is bad (damaged, truncated, incomplete or unsafe): downloading it again is the way out."""


def int_at_least(low: int, what: str = "a whole number"):
    """An argparse ``type`` for integers >= ``low``; anything else is refused in one line (shared
    by the benchmark's commands; here because this module needs nothing beyond the stdlib)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{text!r} must be >= {low}")
        return v

    return parse


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
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
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


def _visible(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.is_dir() else []


def msd_problems(task: Path) -> list[str]:
    """What an extracted MSD task folder lacks (empty: complete). A task needs dataset.json, a
    non-empty imagesTr/, and every image and label its dataset.json lists under ``training``
    (so labelsTr/ when it lists labels; a labelsTr/ that is there must not be empty): a
    truncated archive stops at a member boundary without an error and leaves a partial folder."""
    meta_path = task / "dataset.json"
    if not meta_path.is_file():
        return ["no dataset.json"]
    try:
        meta = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError):
        return ["dataset.json is cut short or unreadable"]
    problems = [f"{sub}/ is {'empty' if (task / sub).is_dir() else 'missing'}"
                for sub in ("imagesTr", "labelsTr")
                if not _visible(task / sub) and (sub == "imagesTr" or (task / sub).exists())]
    training = meta.get("training") if isinstance(meta, dict) else None
    listed = [e.get(k) for e in training if isinstance(e, dict) for k in ("image", "label")] if isinstance(training, list) else []
    missing = [f for f in listed if isinstance(f, str) and not (task / f).is_file()]
    if missing:
        problems.append(f"{len(missing)} of the {len(listed)} files dataset.json lists are missing (e.g. {missing[0]})")
    return problems


def _looks_like_task(folder: Path) -> bool:
    return folder.is_dir() and (folder.name.startswith("Task") or any((folder / n).exists() for n in ("dataset.json", "imagesTr", "labelsTr")))


def extract(archive: Path, dest: Path, expect: str | None = None) -> list[Path]:
    """Extract a tar archive safely into ``dest``; returns the top-level entries it created.

    Extracts into a staging folder first, so an interrupted extraction never looks complete, and
    checks every MSD task folder in it (``Task*`` or with dataset.json / imagesTr / labelsTr,
    and ``expect`` when given) with :func:`msd_problems` before anything is moved into ``dest``.
    A damaged, truncated, incomplete or unsafe archive raises :class:`DamagedArchive` (one line)
    and leaves ``dest`` as it was; the archive itself is the caller's to keep or delete."""
    stage = dest / f".extract-{archive.name}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(stage, filter=_member_filter)
        except tarfile.FilterError as e:
            raise DamagedArchive(f"could not extract {archive.name}: unsafe archive ({e})") from e
        except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
            if isinstance(e, OSError) and e.errno is not None:  # the disk, not the archive (no space, no permission)
                raise DownloadError(f"could not extract {archive.name} into {dest}: {e.strerror or e}") from e
            # a damaged .tar.gz / .tar.bz2 raises OSErrors without an errno (BadGzipFile, "Invalid data stream")
            reason = str(e).splitlines()[0].rstrip(":") if str(e) else type(e).__name__
            if "could not be opened" in reason:  # tarfile's several-line "file could not be opened successfully: - method gz: …"
                reason = "not a readable tar archive"
            raise DamagedArchive(f"could not extract {archive.name}: the archive is damaged or truncated ({reason})") from e
        entries = sorted(stage.iterdir())
        if not entries:
            raise DamagedArchive(f"could not extract {archive.name}: the archive is damaged or empty (nothing in it)")
        if expect and not (stage / expect).is_dir():
            raise DamagedArchive(f"could not extract {archive.name}: the archive is truncated or not the task's (no {expect}/ folder in it)")
        for t in (e for e in entries if _looks_like_task(e)):
            if problems := msd_problems(t):
                raise DamagedArchive(f"could not extract {archive.name}: the archive is truncated or incomplete "
                                     f"({t.name}/: {'; '.join(problems)})")
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    made = []
    for entry in entries:
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
            if not (problems := msd_problems(dest / folder)):
                print(f"{dest / folder} is already there; nothing to do")
                return [dest / folder]
            print(f"{dest / folder} is there but incomplete ({'; '.join(problems)}); fetching it again", file=sys.stderr)
        url, md5 = url or default_url, md5 or (default_md5 if url is None else None)
    if not url:
        raise DownloadError("give --task spleen|colon or --url")
    if urlparse(url).scheme not in ("http", "https", "file"):
        raise DownloadError(f"{url}: only http(s):// and file:// URLs are supported")
    if retries < 0:
        raise DownloadError(f"retries must be >= 0, got {retries}")
    if blocker := next((p for p in (dest, *dest.parents) if p.exists() and not p.is_dir()), None):
        raise DownloadError(f"{blocker} is a file, not a folder: give --dest a folder (it is made when missing)")
    archive = dest / PurePosixPath(urlparse(url).path).name
    if not archive.name or archive.name in (".", ".."):
        raise DownloadError(f"{url}: the URL names no archive file")
    created = [p for p in (dest, *dest.parents) if not p.exists()]  # folders this call makes, deepest first
    try:
        download(url, archive, md5, retries)
        try:
            made = extract(archive, dest, folder if task else None)
        except DamagedArchive as e:
            archive.unlink(missing_ok=True)  # a new download is the way out; keeping it would only be mistaken for a good one
            raise DamagedArchive(f"{e}; nothing was extracted and the downloaded archive {archive} was deleted") from e
        except DownloadError as e:
            raise DownloadError(f"{e}; nothing was extracted, the archive is kept at {archive}") from e
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
    p.add_argument("--retries", type=int_at_least(0), default=3, help="automatic resumes after an interruption (default 3)")
    p.add_argument("--keep-archive", action="store_true", help="keep the .tar after extraction")
    p.set_defaults(func=_main)


def _main(a: argparse.Namespace) -> None:
    try:
        made = fetch_task(Path(a.dest), a.task, a.url, a.md5, a.retries, a.keep_archive)
    except DownloadError as e:
        sys.exit(f"error: {e}")
    for m in made:
        print(f"extracted: {m}")
