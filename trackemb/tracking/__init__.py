"""Video -> moving regions -> tracks -> patches and positive pairs (numpy + OpenCV only)."""

from trackemb.tracking.decode import (
    DecordReader,
    FrameReader,
    OpenCVReader,
    VideoInfo,
    open_video,
    to_work_gray,
)
from trackemb.tracking.files import check_file, find_videos, probe_file, video_sha
from trackemb.tracking.harvest import harvest_video
from trackemb.tracking.motion import (
    MotionResult,
    WorkFrame,
    find_moving_regions,
    make_work_frame,
    object_points,
)
from trackemb.tracking.stream import FrameStream, check_complete, iter_frames
from trackemb.tracking.tracker import (
    TRACKERS,
    MedianFlowTracker,
    Tracker,
    TrackStep,
    build_tracker,
    update_trackers,
)

__all__ = [
    "TRACKERS",
    "DecordReader",
    "FrameReader",
    "FrameStream",
    "MedianFlowTracker",
    "MotionResult",
    "OpenCVReader",
    "TrackStep",
    "Tracker",
    "VideoInfo",
    "WorkFrame",
    "build_tracker",
    "check_complete",
    "check_file",
    "find_videos",
    "find_moving_regions",
    "harvest_video",
    "iter_frames",
    "make_work_frame",
    "object_points",
    "open_video",
    "probe_file",
    "to_work_gray",
    "update_trackers",
    "video_sha",
]
