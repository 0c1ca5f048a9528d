"""Quiet, well-routed output: no Prefect telemetry from the CLI's temporary server, no faiss or
libav chatter, Prefect task records named after their task run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("PREFECT_SERVER_ANALYTICS_ENABLED", "DO_NOT_TRACK")
    }
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_turns_prefect_telemetry_off_before_prefect_loads() -> None:
    proc = _python(
        "import trackemb.cli\n"
        "from prefect.settings import get_current_settings\n"
        "print(get_current_settings().server.analytics_enabled)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_libav_chatter_is_filtered_but_not_with_verbose() -> None:
    # box.mp4 makes libav print "A non-intra slice in an IDR NAL unit" through OpenCV.
    decode = (
        "import cv2\n"
        "cap = cv2.VideoCapture('examples/videos/box.mp4')\n"
        "n = 0\n"
        "while cap.read()[0]:\n"
        "    n += 1\n"
        "print(n)\n"
    )
    quiet = _python(f"from trackemb.cli.app import _main\n_main(verbose=False, version=False)\n{decode}")
    loud = _python(f"from trackemb.cli.app import _main\n_main(verbose=True, version=False)\n{decode}")
    assert quiet.returncode == 0 and int(quiet.stdout) > 400, quiet.stderr
    assert "non-intra slice" in loud.stderr, "the sample no longer triggers libav's message; pick another"
    assert "non-intra slice" not in quiet.stderr and "[h264" not in quiet.stderr, quiet.stderr


def test_log_lines_name_the_task_run_and_quiet_third_parties(capsys) -> None:
    from trackemb.cli.present import setup_logging

    setup_logging(verbose=False)
    try:
        record = logging.LogRecord(
            "prefect.task_runs", logging.INFO, __file__, 1, "Finished in state %s", ("Completed()",), None
        )
        record.task_run_name = "harvest /videos/box.mp4"
        logging.getLogger("prefect.task_runs").handle(record)
        logging.getLogger("faiss.loader").info("Loading faiss with AVX512 support.")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logging.getLogger("prefect.flow_runs").exception("Encountered exception during execution")
        err = capsys.readouterr().err
    finally:
        logging.basicConfig(force=True)
    assert "harvest /videos/box.mp4: Finished in state Completed()" in err
    assert "AVX512" not in err
    assert "Encountered exception during execution" in err and "Traceback" not in err, err
