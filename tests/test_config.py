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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[trian]\nsteps = 5\n", "unknown table [trian]; did you mean [train]?"),
        ("[train]\nbatch_pair = 8\n", "[train] unknown key 'batch_pair'; did you mean 'batch_pairs'?"),
        ("[train.mine]\nmargn = 0.2\n", "[train.mine] unknown key 'margn'; did you mean 'margin'?"),
        ("[harvest.decod]\nbackend = 'opencv'\n", "[harvest] unknown table 'decod'; did you mean 'decode'?"),
        ("[train]\nsteps = 0\n", "[train] steps = 0: Input should be greater than or equal to 1"),
        ("steps = 5\n", "unknown top-level key 'steps'"),
    ],
)
def test_config_errors_name_file_table_key_and_nearest_name(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "cfg.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(TrainConfig, toml, section="train")
    assert str(exc.value).startswith(f"{toml}: {message}"), str(exc.value)


def test_every_table_is_checked_whichever_stage_loads_the_file(tmp_path: Path) -> None:
    toml = tmp_path / "cfg.toml"
    toml.write_text("[harvest]\npatch_px = 64\n[train]\nbatch_pair = 8\n")
    with pytest.raises(ConfigError, match=r"\[train\] unknown key 'batch_pair'"):
        load_config(HarvestConfig, toml, section="harvest")


def test_bare_train_file_for_python_m_train(tmp_path: Path) -> None:
    toml = tmp_path / "cfg.toml"
    toml.write_text("steps = 5\n")
    assert load_config(TrainConfig, toml, section="train", allow_top_level=True).steps == 5
    toml.write_text("[trian]\nsteps = 5\n")
    with pytest.raises(ConfigError, match=r"unknown table \[trian\]; did you mean \[train\]\?"):
        load_config(TrainConfig, toml, section="train", allow_top_level=True)
    toml.write_text("stepz = 5\n")
    with pytest.raises(ConfigError, match="unknown key 'stepz'; did you mean 'steps'"):
        load_config(TrainConfig, toml, section="train", allow_top_level=True)


def test_a_missing_section_means_defaults_not_other_tables(tmp_path: Path) -> None:
    toml = tmp_path / "cfg.toml"
    toml.write_text("[harvest]\npatch_px = 64\n")
    assert load_config(TrainConfig, toml, section="train") == TrainConfig()
