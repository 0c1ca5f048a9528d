"""A corpus of bad (and awkward but valid) video files, generated on the spot for the reliability tests.

:func:`make_bad_corpus` fills a folder and returns what a harvest must report for each
entry. Files are made with ``tests/synthetic.py`` (cv2) and the ffmpeg binary that
``imageio-ffmpeg`` ships, so nothing is downloaded and every case is reproducible.

Policy encoded here (documented in the README):

- corrupt or unusable input is a *failure* with a specific ``error_kind``;
- a valid video with nothing to track (one frame, no motion, a few 4K frames) is *done*
  with 0 pairs: the file is fine, it just yields no training data;
- awkward but valid input (variable frame rate, non-ASCII and space-containing names) is
  harvested like any other video;
- things that are not files (a directory named ``x.mp4``) are not videos and are not listed.

About "unreadable": root reads a ``chmod 000`` file anyway (CAP_DAC_OVERRIDE), so when the
tests run as root they start the CLI with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped
(:func:`run_cli` with ``obey_file_modes``): still uid 0, but bound by file modes. Where even
that is impossible the case is expected "done" (``Expect.unprivileged_only``). Two more cases
fail for every user, root included: a symlink loop (ELOOP) and a symlink to a FIFO (rejected
without being opened: opening a FIFO blocks until a writer appears).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from synthetic import write_static_video, write_synthetic_video

GOOD_OBJECTS = 2  # two moving objects give a few pairs per 60-frame clip


@dataclass(frozen=True)
class Expect:
    """What a harvest must report for one corpus entry (keyed by file name)."""

    status: Literal["done", "failed", "absent", "duplicate"]
    kind: str = ""  # error_kind of a failure; for a duplicate, the name of the file stored instead
    min_pairs: int = 0  # for "done"
    max_pairs: int | None = None  # for "done"; 0 = must yield nothing
    unprivileged_only: bool = False  # fails only for a reader that cannot bypass file modes
    note: str = ""


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ffmpeg quietly; raises CalledProcessError with its stderr on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)


def vfr_ratio(path: str | Path) -> float:
    """Fraction of frames whose duration differs from the previous one (ffmpeg ``vfrdet``); 0 for CFR."""
    out = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path), "-vf", "vfrdet", "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stderr
    found = re.findall(r"VFR:([0-9.]+)", out)
    return float(found[-1]) if found else 0.0


def truncate(src: Path, dst: Path, keep_frac: float) -> None:
    """Copy the first ``keep_frac`` of ``src`` to ``dst``: a file cut mid-stream."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep_frac)])


def good_video(path: Path, seed: int, **kwargs: object) -> Path:
    """A synthetic clip with moving objects that the harvest turns into pairs."""
    kwargs.setdefault("n_objects", GOOD_OBJECTS)
    write_synthetic_video(path, seed=seed, **kwargs)  # type: ignore[arg-type]
    return path


GOOD = Expect("done", min_pairs=1, note="synthetic clip with moving objects")
GOOD_NAMES = ("good_0.mp4", "good_1.mp4")
ODD_NAMES = ("vidéo ünïcode 日本.mp4", "with spaces & 'quotes'.mp4")
# A Latin-1 name: its bytes are not UTF-8. Python sees 'caf\udce9.mp4'; stores show 'caf\\xe9.mp4'.
NON_UTF8_NAME = os.fsdecode(b"caf\xe9.mp4")
NON_UTF8_SHOWN = "caf\\xe9.mp4"
DUP_NAMES = ("dup_first.mp4", "dup_second.mp4")  # identical bytes: harvested once


def make_bad_corpus(root: str | Path) -> dict[str, Expect]:
    """Write the corpus into ``root`` (created); returns ``{file name: Expect}``.

    Takes about 2 s. Intermediate files live outside ``root`` so that only corpus entries
    are found there.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    expect: dict[str, Expect] = {}
    with tempfile.TemporaryDirectory(prefix="badcorpus-src-") as tmp:
        src = Path(tmp)
        for i, name in enumerate(GOOD_NAMES + ODD_NAMES):
            good_video(root / name, seed=10 + i)
            expect[name] = GOOD

        # Written under a plain name: OpenCV's writer, like its reader, crashes on such a name.
        os.rename(good_video(src / "latin1.mp4", seed=14), root / NON_UTF8_NAME)
        expect[NON_UTF8_SHOWN] = Expect("done", min_pairs=1, note="Latin-1 file name (not UTF-8)")

        good_video(root / DUP_NAMES[0], seed=15)
        (root / DUP_NAMES[1]).write_bytes((root / DUP_NAMES[0]).read_bytes())
        expect[DUP_NAMES[0]] = Expect("done", min_pairs=1, note="first of two identical files")
        expect[DUP_NAMES[1]] = Expect("duplicate", DUP_NAMES[0], note="byte copy of dup_first.mp4")

        (root / "empty.mp4").write_bytes(b"")
        expect["empty.mp4"] = Expect("failed", "empty_file", note="0 bytes")

        (root / "not_a_video.mp4").write_text("This is a text file, named .mp4 by mistake.\n" * 20)
        expect["not_a_video.mp4"] = Expect("failed", "not_a_video", note="text file named .mp4")

        # cv2's mp4v writer puts the index ('moov') at the end: a cut file has no index at all.
        truncate(good_video(src / "cut.mp4", seed=30), root / "truncated.mp4", 0.55)
        expect["truncated.mp4"] = Expect("failed", "truncated", note="MP4 cut mid-stream, index at the end")

        # An AVI cut to its first third (a half-copied file): its header still declares all 60 frames.
        full = write_synthetic_video(src / "full.avi", n_frames=60, n_objects=2, seed=12).path
        (root / "half_copied.avi").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
        expect["half_copied.avi"] = Expect(
            "failed", "truncated", note="MJPEG AVI cut to its first third: decodes 20 of 60 frames"
        )

        # With the index first (+faststart) decoders happily return the frames before the cut.
        good_video(src / "fs_src.mp4", seed=31)
        ffmpeg("-i", str(src / "fs_src.mp4"), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
               "-movflags", "+faststart", str(src / "fs.mp4"))  # fmt: skip
        truncate(src / "fs.mp4", root / "truncated_faststart.mp4", 0.6)
        expect["truncated_faststart.mp4"] = Expect(
            "failed", "truncated", note="H.264 MP4 cut mid-stream, index first: the first frames still decode"
        )

        ffmpeg(
            "-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(root / "audio_only.mp4")
        )
        expect["audio_only.mp4"] = Expect(
            "failed", "no_video_stream", note="AAC audio in an MP4, no video track"
        )

        write_synthetic_video(root / "single_frame.mp4", n_frames=1, seed=32)
        expect["single_frame.mp4"] = Expect(
            "done", max_pairs=0, note="valid video of one frame: nothing to track"
        )

        write_static_video(root / "no_motion.mp4", seed=33)
        expect["no_motion.mp4"] = Expect("done", max_pairs=0, note="valid video, nothing moves")

        # Variable frame rate: frame durations alternate (1.6 and 0.4 frame periods).
        good_video(src / "vfr_src.mp4", seed=34)
        ffmpeg("-i", str(src / "vfr_src.mp4"), "-vf", "settb=1/1000,setpts='(N+0.6*mod(N,2))/15/TB'",
               "-fps_mode", "vfr", "-enc_time_base", "1/1000", "-c:v", "libx264", "-preset", "ultrafast",
               "-pix_fmt", "yuv420p", str(root / "vfr.mp4"))  # fmt: skip
        assert vfr_ratio(root / "vfr.mp4") > 0.5, "ffmpeg wrote a constant frame rate file"
        expect["vfr.mp4"] = Expect("done", min_pairs=1, note="variable frame rate, moving objects")

        ffmpeg("-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=15", "-frames:v", "6", "-c:v", "libx264",
               "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(root / "big_4k.mp4"))  # fmt: skip
        expect["big_4k.mp4"] = Expect(
            "done", note="3840x2160, 6 frames: decoded and analysed at working size"
        )

        unreadable = good_video(root / "unreadable.mp4", seed=35)
        unreadable.chmod(0)
        expect["unreadable.mp4"] = Expect(
            "failed", "permission_denied", unprivileged_only=True, note="mode 000 (root reads it anyway)"
        )

        os.symlink("symlink_loop.mp4", root / "symlink_loop.mp4")
        expect["symlink_loop.mp4"] = Expect(
            "failed", "symlink_loop", note="link to itself: ELOOP even for root"
        )

        os.symlink("no_such_target.mp4", root / "broken_link.mp4")
        expect["broken_link.mp4"] = Expect("failed", "broken_symlink", note="link to a missing file")

        os.mkfifo(root / "pipe.fifo")
        os.symlink("pipe.fifo", root / "pipe_link.mp4")
        expect["pipe_link.mp4"] = Expect(
            "failed", "not_a_file", note="link to a FIFO: rejected without opening it (opening would block)"
        )

        (root / "folder.mp4").mkdir()
        expect["folder.mp4"] = Expect("absent", note="a directory named .mp4 is not a video file")
    return expect


# ---- running the CLI on a corpus (shared by the CLI-level reliability tests) ----

REPO = Path(__file__).resolve().parents[1]
_PR_CAPBSET_DROP, _CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 24, 1, 2


def drop_file_mode_bypass() -> None:
    """``preexec_fn``: drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH so that even root obeys file modes.

    Dropping them from the bounding set before ``exec`` keeps them out of the new program's
    capabilities, while the process stays uid 0 (so it can still use the root-owned venv).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _read_probe(path: Path, preexec: Callable[[], None] | None) -> bool | None:
    """Whether a child started with ``preexec`` can read ``path``; None if such a child cannot start."""
    code = "import sys; open(sys.argv[1], 'rb').read(1)"
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], preexec_fn=preexec, capture_output=True,
                              timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.returncode == 0


@functools.cache
def _mode_preexec() -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a child obey file modes: the capability drop when root, else none."""
    if os.geteuid() != 0:
        return None
    return drop_file_mode_bypass if _read_probe(Path(sys.executable), drop_file_mode_bypass) else None


def child_obeys_file_modes(unreadable: Path) -> bool:
    """Whether a child started by ``run_cli(obey_file_modes=True)`` is denied reading a mode-000 file."""
    return _read_probe(unreadable, _mode_preexec()) is False


def cli_env(prefect_home: Path) -> dict[str, str]:
    """Environment for a ``trackemb`` CLI subprocess: offline Prefect, the test session's API when there is one."""
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(prefect_home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        COLUMNS="400",  # rich tables: full file names in the output
        OMP_NUM_THREADS="1",
    )
    try:  # inside the session's prefect_test_harness: reuse its API instead of starting a server
        from prefect.settings import PREFECT_API_URL

        url = PREFECT_API_URL.value()
    except ImportError:
        url = None
    if url:
        env["PREFECT_API_URL"] = url
    return env


def run_cli(
    args: list[str],
    env: dict[str, str],
    *,
    obey_file_modes: bool = False,
    timeout_s: float = 300,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    """``python -m trackemb.cli ARGS`` (in ``cwd``); ``obey_file_modes`` drops root's bypass of file modes."""
    return subprocess.run(
        [sys.executable, "-m", "trackemb.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        preexec_fn=_mode_preexec() if obey_file_modes else None,
    )


class GrowingFile:
    """A video that keeps growing while a harvest runs (a copy into a watched folder).

    ``with GrowingFile(dst, content):`` writes ``head_frac`` of ``content`` at once, then appends
    a little every ``every_s`` seconds, and writes the rest only when the block ends: whatever
    reads it inside the block sees a half-copied file whose size and mtime keep changing.
    """

    def __init__(self, dst: Path, content: bytes, head_frac: float = 0.3, every_s: float = 0.1) -> None:
        import threading

        self.dst, self.content, self.every_s = dst, content, every_s
        self.written = int(len(content) * head_frac)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._grow, daemon=True)

    def _grow(self) -> None:
        step = max(1, len(self.content) // 400)
        while not self._stop.wait(self.every_s) and self.written + step < len(self.content):
            with open(self.dst, "ab") as fh:
                fh.write(self.content[self.written : self.written + step])
            self.written += step

    def __enter__(self) -> GrowingFile:
        self.dst.write_bytes(self.content[: self.written])
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        with open(self.dst, "ab") as fh:
            fh.write(self.content[self.written :])
