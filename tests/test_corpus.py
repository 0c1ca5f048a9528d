"""The corpus manifest and fetcher, offline: real archives built here, real hashes, real video files."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `bench` is a top-level package of the repository, not installed

from bench.corpus import REQUIRED, Clip, fetch, is_cached, load_manifest, scenes  # noqa: E402
from bench.corpus_io import CorpusError, extract, frames_to_video, sequence_digest  # noqa: E402


def _frames(folder: Path, n: int, size: tuple[int, int] = (64, 48), ext: str = "png") -> list[Path]:
    """``n`` frames of a white square moving right over a gradient; gray PGM or colour PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    out = []
    for i in range(n):
        img = np.tile(np.linspace(0, 120, w, dtype=np.uint8), (h, 1))
        img[10:26, 4 + 2 * i : 20 + 2 * i] = 255
        path = folder / f"image{i:04d}.{ext}"
        cv2.imwrite(str(path), img if ext == "pgm" else cv2.merge([img, img // 2, 255 - img]))
        out.append(path)
    return out


def _count_frames(path: Path) -> tuple[int, tuple[int, ...]]:
    cap = cv2.VideoCapture(str(path))
    n, shape = 0, ()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, shape = n + 1, frame.shape
    return n, shape


def test_manifest_entries_are_complete_and_pinned() -> None:
    clips = load_manifest()
    assert len(clips) >= 20
    for c in clips:
        for key in REQUIRED:
            assert str(getattr(c, key)).strip(), f"{c.name}: empty {key}"
        assert len(c.sha256) == 64 and all(ch in "0123456789abcdef" for ch in c.sha256), c.name
        assert c.registry in ("pypi", "debian", "bundled") and c.split in ("train", "heldout")
    assert len({c.name for c in clips}) == len(clips)
    bundled = [c for c in clips if c.registry == "bundled"]
    for c in bundled:  # the bundled clips are in the repository, so their hashes can be checked here
        assert hashlib.sha256((REPO / c.path).read_bytes()).hexdigest() == c.sha256, c.name


def test_split_is_by_scene_and_mixes_content() -> None:
    clips = load_manifest()
    train, held = set(scenes(clips, "train")), set(scenes(clips, "heldout"))
    assert train and held and not (train & held)
    for scene in train | held:
        assert len({c.split for c in clips if c.scene == scene}) == 1, scene


def test_manifest_rejects_a_scene_on_both_sides(tmp_path: Path) -> None:
    text = (REPO / "bench" / "corpus.toml").read_text()
    first_heldout = text.index('split = "heldout"')
    bad = tmp_path / "bad.toml"
    bad.write_text(
        text[:first_heldout] + 'split = "train"' + text[first_heldout + len('split = "heldout"') :]
    )
    with pytest.raises(CorpusError, match="both splits"):
        load_manifest(bad)
    bad.write_text(text.replace('sha256 = "4', 'sha256 = "X', 1))
    with pytest.raises(CorpusError, match="64 lowercase hex"):
        load_manifest(bad)


def _wheel(root: Path, files: dict[str, bytes]) -> None:
    """A real wheel in the download cache, where :func:`bench.corpus_io.download` finds it offline."""
    dest = root / "downloads" / "pypi" / "fakepkg-1.0"
    dest.mkdir(parents=True)
    with zipfile.ZipFile(dest / "fakepkg-1.0-py3-none-any.whl", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr("fakepkg/__init__.py", b"")  # not listed: must not be extracted


def test_fetch_verifies_converts_lays_out_and_rejects_tampering(tmp_path: Path) -> None:
    video = tmp_path / "src.mp4"
    frames_to_video(_frames(tmp_path / "rgb", 8), video, fps=10)
    seq = _frames(tmp_path / "seq", 6, ext="pgm")
    files = {"fakepkg/data/clip.mp4": video.read_bytes()}
    files |= {f"fakepkg/seq/{p.name}": p.read_bytes() for p in seq}
    root = tmp_path / "cache"
    _wheel(root, files)
    common = dict(registry="pypi", package="fakepkg", version="1.0", licence="MIT", content="test")
    clips = [
        Clip(name="moving", scene="a", path="fakepkg/data/clip.mp4",
             sha256=hashlib.sha256(video.read_bytes()).hexdigest(), split="train", **common),
        Clip(name="seq", scene="b", path="fakepkg/seq", pattern="image*.pgm", fps=5,
             sha256=sequence_digest(seq), split="heldout", **common),
    ]  # fmt: skip
    log: list[str] = []
    assert fetch(clips, root, log=log.append) == {"moving": "fetched", "seq": "fetched"}
    assert (root / "train" / "a" / "moving.mp4").resolve() == (root / "clips" / "moving.mp4").resolve()
    assert _count_frames(root / "heldout" / "b" / "seq.mp4") == (6, (48, 64, 3))
    assert not list(root.glob("clips/**/__init__.py"))
    assert fetch(clips, root, log=log.append) == {"moving": "cached", "seq": "cached"}

    # A cached file that changed is not "cached" any more, and is restored from the archive.
    (root / "clips" / "moving.mp4").write_bytes(b"tampered")
    assert not is_cached(clips[0], root / "clips" / "moving.mp4")
    assert fetch(clips, root, log=log.append)["moving"] == "fetched"

    # Package content that does not match the manifest stops the run, naming the clip.
    wrong = dataclasses.replace(clips[0], name="wrong", sha256="0" * 64)
    with pytest.raises(CorpusError, match=r"clip 'wrong'.*sha256 mismatch"):
        fetch([wrong], root, log=log.append)
    assert not (root / "clips" / "wrong.mp4").exists()
    frame = seq[2].read_bytes()
    (root / "downloads" / "pypi" / "fakepkg-1.0" / "fakepkg-1.0-py3-none-any.whl").unlink()
    shutil.rmtree(root / "downloads" / "pypi" / "fakepkg-1.0")
    _wheel(root, files | {f"fakepkg/seq/{seq[2].name}": frame[:-1] + b"\x00"})
    (root / "clips" / "seq.mp4").unlink()
    with pytest.raises(CorpusError, match=r"clip 'seq'.*sha256 mismatch"):
        fetch(clips, root, log=log.append)


def test_sequence_digest_matches_the_documented_shell_recipe(tmp_path: Path) -> None:
    seq = _frames(tmp_path / "seq", 3, ext="pgm")
    listing = subprocess.run(
        ["sha256sum", *[p.name for p in seq]], cwd=seq[0].parent, capture_output=True, text=True
    )
    assert sequence_digest(seq) == hashlib.sha256(listing.stdout.encode()).hexdigest()


def test_frames_to_video_is_decodable_with_the_right_frames(tmp_path: Path) -> None:
    frames = _frames(tmp_path / "f", 17, size=(81, 50))  # odd width: cropped to even for H.264
    out = tmp_path / "out.mp4"
    assert frames_to_video(frames, out, fps=12) == 17
    n, shape = _count_frames(out)
    assert (n, shape) == (17, (50, 80, 3))
    cap = cv2.VideoCapture(str(out))
    for _ in range(5):
        ok, got = cap.read()
    want = cv2.imread(str(frames[4]))[:, :80]
    assert ok and np.abs(got.astype(int) - want.astype(int)).mean() < 6  # near-lossless, same frame order


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb not installed")
def test_extract_reads_only_listed_members_of_a_real_deb(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: fakedata\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n"
    )
    _frames(pkg / "usr" / "share" / "fake" / "seq", 4, ext="pgm")
    (pkg / "usr" / "share" / "fake" / "seq" / "notes.txt").write_text("not a frame")
    (pkg / "usr" / "share" / "fake" / "other.bin").write_bytes(b"x")
    deb = tmp_path / "fakedata_1.0-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True
    )
    got = extract(deb, [("usr/share/fake/seq", "image*.pgm")], tmp_path / "out")
    assert [p.name for p in got] == [f"image{i:04d}.pgm" for i in range(4)]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*") if p.is_file()) == [p.name for p in got]
