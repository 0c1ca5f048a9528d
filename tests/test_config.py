from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from trackemb.config import ConfigError, HarvestConfig, TrainConfig, load_config


def test_toml_section_and_overrides(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("[harvest]\npatch_px = 64\n[harvest.track]\ntrack_len_frames = 12\n[train]\nsteps = 7\n")
    cfg = load_config(HarvestConfig, toml, {"decode.frame_stride": 2, "seed": None}, section="harvest")
    assert cfg.patch_px == 64 and cfg.track.track_len_frames == 12 and cfg.decode.frame_stride == 2
    assert load_config(TrainConfig, toml, section="train").steps == 7


def test_unknown_key_and_bad_type_name_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[harvest]\npatch_pixels = 64\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(HarvestConfig, toml, section="harvest")
    with pytest.raises(ConfigError, match="patch_px"):
        load_config(HarvestConfig, None, {"patch_px": "big"})


def test_fingerprint_tracks_content() -> None:
    assert HarvestConfig().fingerprint() == HarvestConfig().fingerprint()
    assert HarvestConfig(patch_px=64).fingerprint() != HarvestConfig().fingerprint()


def test_configs_are_frozen() -> None:
    with pytest.raises(ValidationError, match="frozen"):
        HarvestConfig().patch_px = 3  # type: ignore[misc]
