"""Getting corpus files out of packages: download with the ordinary clients, extract listed
members only, hash, and turn image sequences into video files.

Kept apart from :mod:`bench.corpus` (manifest, cache layout, CLI) so each stays small.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

import cv2
import numpy as np

from trackemb.tracking.files import video_sha


class CorpusError(RuntimeError):
    """A corpus step failed; the message names the clip or package and the cause."""


def sequence_digest(files: list[Path]) -> str:
    """sha256 of the ``sha256sum`` listing of ``files`` (basenames, in the given order).

    The same value as ``ls PATTERN | LC_ALL=C sort | xargs sha256sum | sha256sum`` in the folder.
    """
    listing = "".join(f"{video_sha(f)}  {f.name}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise CorpusError(f"{what}: `{' '.join(cmd)}` failed (exit {proc.returncode}): {' | '.join(tail)}")


def download(registry: str, package: str, version: str, dest: Path, *, sdist: bool = False) -> Path:
    """Download one package archive into ``dest`` (its own folder) unless it is already there.

    PyPI: ``pip download --no-deps PKG==VERSION``; Debian: ``apt-get download PKG=VERSION``
    (the package lists must be current: run ``apt-get update`` once).

    Returns:
        The archive (.whl, .tar.gz or .deb).
    """
    dest.mkdir(parents=True, exist_ok=True)
    found = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip", ".deb")]
    if len(found) == 1:
        return found[0]
    for stale in found:
        stale.unlink()
    what = f"{registry} package {package} {version}"
    if registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{package}=={version}", "-d", "."]
        cmd += ["--no-binary" if sdist else "--only-binary", package]
        _run(cmd, dest, what)
    elif registry == "debian":
        if shutil.which("apt-get") is None:
            raise CorpusError(f"{what}: apt-get not found (a Debian or Ubuntu machine is needed)")
        try:
            _run(["apt-get", "download", f"{package}={version}"], dest, what)
        except CorpusError as exc:
            raise CorpusError(f"{exc} (run `apt-get update` once if the version is unknown)") from exc
    else:
        raise CorpusError(f"{what}: unknown registry {registry!r}")
    found = [p for p in dest.iterdir() if p.suffix in (".whl", ".gz", ".zip", ".deb")]
    if len(found) != 1:
        raise CorpusError(f"{what}: expected one archive in {dest}, found {[p.name for p in found]}")
    return found[0]


@contextmanager
def _deb_tar(deb: Path) -> Iterator[tarfile.TarFile]:
    """Stream the data tarball of a .deb (``dpkg-deb --fsys-tarfile``), members named ``./usr/...``."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    assert proc.stdout is not None  # set by stdout=PIPE
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            yield tar
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def _wanted(member: str, path: str, pattern: str | None) -> str | None:
    """The member's path relative to the archive root when it is listed, else None."""
    name = member.removeprefix("./")
    if pattern is None:
        return name if name == path else None
    p = PurePosixPath(name)
    return name if str(p.parent) == path.rstrip("/") and fnmatch.fnmatch(p.name, pattern) else None


def _copy(src: IO[bytes], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:
        shutil.copyfileobj(src, fh, 1 << 20)


def extract(archive: Path, members: list[tuple[str, str | None]], dest: Path) -> list[Path]:
    """Extract only the listed members of a wheel, sdist or .deb into ``dest``.

    Args:
        archive: .whl/.zip, .tar.gz or .deb.
        members: ``(path, pattern)``: a file path, or a folder plus a glob for its files.
        dest: output root; files keep their path inside the package.

    Returns:
        The extracted files, sorted by path.
    """
    out: list[Path] = []
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if any(_wanted(info.filename, p, pat) for p, pat in members) and not info.is_dir():
                    with zf.open(info) as src:
                        _copy(src, dest / info.filename)
                    out.append(dest / info.filename)
    else:
        opener = _deb_tar(archive) if archive.suffix == ".deb" else tarfile.open(archive, "r|*")
        with opener as tar:
            for info in tar:
                rel = next((r for p, pat in members if (r := _wanted(info.name, p, pat))), None)
                if rel and info.isfile():
                    src = tar.extractfile(info)
                    assert src is not None  # regular file
                    _copy(src, dest / rel)
                    out.append(dest / rel)
    return sorted(out)


def write_video(frames: Iterable[np.ndarray], out: Path, fps: float, size: tuple[int, int]) -> int:
    """Encode BGR frames of ``size`` (w, h; even) as a near-lossless H.264 MP4 (crf 15), atomically.

    Returns:
        Frames written.
    """
    import imageio_ffmpeg

    tmp = out.with_name(out.name + ".part.mp4")
    writer = imageio_ffmpeg.write_frames(
        str(tmp), size, fps=fps, codec="libx264", quality=None, macro_block_size=1,
        pix_fmt_in="rgb24", pix_fmt_out="yuv420p", output_params=["-crf", "15"],
    )  # fmt: skip
    writer.send(None)  # start ffmpeg
    n = 0
    try:
        for bgr in frames:
            writer.send(np.ascontiguousarray(bgr[: size[1], : size[0], ::-1]))
            n += 1
    finally:
        writer.close()
    tmp.replace(out)
    return n


def frames_to_video(frames: list[Path], out: Path, fps: float) -> int:
    """Encode an image sequence (PGM, PNG, JPEG; gray or colour) as an H.264 MP4.

    Gray frames become RGB; an odd width or height loses its last column or row (H.264).

    Returns:
        Frames written.
    """
    if not frames:
        raise CorpusError(f"{out.name}: no frames to convert")
    first = cv2.imread(str(frames[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise CorpusError(f"{frames[0]}: not a readable image")

    def read() -> Iterator[np.ndarray]:
        for f in frames:
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None or img.shape != first.shape:
                raise CorpusError(
                    f"{f}: unreadable or not {first.shape[1]}x{first.shape[0]} like the first frame"
                )
            yield img

    return write_video(read(), out, fps, (first.shape[1] // 2 * 2, first.shape[0] // 2 * 2))


def reencode_video(src: Path, out: Path) -> int:
    """Decode every frame OpenCV can read from ``src`` and write them as an H.264 MP4.

    Returns:
        Frames written.
    """
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    ok, first = cap.read()
    if not ok:
        raise CorpusError(f"{src}: no decodable frame")

    def read() -> Iterator[np.ndarray]:
        frame: np.ndarray | None = first
        while frame is not None:
            yield frame
            ok, frame = cap.read()
            frame = frame if ok else None

    try:
        return write_video(read(), out, fps, (first.shape[1] // 2 * 2, first.shape[0] // 2 * 2))
    finally:
        cap.release()
