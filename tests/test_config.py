"""Typed configs: round trips, strictness, merging, presets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from contrasyn.config import from_dict, load_config, merge, save_config, to_dict
from contrasyn.errors import ConfigError
from contrasyn.methods.csi_config import RunConfig, ScoreConfig, TrainConfig
from contrasyn.methods.presets import PRESETS, get_preset


def _custom() -> RunConfig:
    return RunConfig(
        TrainConfig(
            width=8,
            image_size=16,
            channels=1,
            epochs=7,
            max_train=123,
            jitter=(0.1, 0.2, 0.3, 0.05),
            crop_scale=(0.2, 0.9),
            blur=True,
            precision="bf16",
            base_lr=0.05,
        ),
        ScoreConfig(score="csi", ensemble=3, crop_scale=0.6, chunk=17, seed=4),
    )


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
@pytest.mark.parametrize("make", [RunConfig, _custom])
def test_file_round_trip(tmp_path: Path, suffix: str, make) -> None:
    cfg = make()
    path = tmp_path / f"cfg{suffix}"
    save_config(cfg, path)
    back = load_config(RunConfig, path)
    assert back == cfg
    assert isinstance(back.train.jitter, tuple) and isinstance(back.train.crop_scale, tuple)
    if suffix == ".json":
        assert path.read_text().lstrip().startswith("{")
    else:
        assert yaml.safe_load(path.read_text())["train"]["width"] == cfg.train.width


def test_dict_round_trip_and_json_types() -> None:
    cfg = _custom()
    data = to_dict(cfg)
    assert data["train"]["jitter"] == [0.1, 0.2, 0.3, 0.05]
    assert data["train"]["max_train"] == 123 and data["score"]["score"] == "csi"
    assert from_dict(RunConfig, data) == cfg
    assert from_dict(TrainConfig, to_dict(cfg.train)) == cfg.train


def test_partial_dicts_use_defaults() -> None:
    cfg = from_dict(RunConfig, {"train": {"width": 2}})
    assert cfg.train.width == 2 and cfg.train.epochs == TrainConfig().epochs
    assert cfg.score == ScoreConfig()
    assert from_dict(RunConfig, {}) == RunConfig()


@pytest.mark.parametrize(
    "data",
    [{"trian": {}}, {"train": {"widht": 4}}, {"score": {"ensembles": 2}}, {"train": {}, "x": 1}],
)
def test_unknown_keys_refused(data: dict) -> None:
    with pytest.raises(ConfigError, match="unknown field"):
        from_dict(RunConfig, data)


def test_unknown_key_message_names_the_key() -> None:
    with pytest.raises(ConfigError, match="widht") as info:
        from_dict(TrainConfig, {"widht": 4})
    assert "width" in str(info.value)  # the known fields are listed


def test_non_mapping_refused() -> None:
    with pytest.raises(ConfigError, match="mapping"):
        from_dict(RunConfig, {"train": [1, 2]})
    with pytest.raises(ConfigError, match="mapping"):
        from_dict(RunConfig, "width: 4")


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match="epochz"):
        load_config(RunConfig, path)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(RunConfig, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="not valid"):
        load_config(RunConfig, bad)
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_config(RunConfig, bad_yaml)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(RunConfig, empty) == RunConfig()


def test_merge_nested_overrides() -> None:
    base = _custom()
    merged = merge(base, {"train": {"epochs": 2, "crop_scale": [0.5, 1.0]}, "score": {"seed": 9}})
    assert merged.train.epochs == 2 and merged.train.crop_scale == (0.5, 1.0)
    assert merged.score.seed == 9
    # untouched fields keep their (non-default) values
    assert merged.train.width == 8 and merged.train.max_train == 123 and merged.score.ensemble == 3
    # the original is not modified
    assert base.train.epochs == 7 and base.score.seed == 4
    assert merge(base, {}) == base
    # a whole sub-config replaced by a dict merges into it
    assert merge(TrainConfig(), {"epochs": 3}).epochs == 3


def test_merge_refuses_unknown_keys() -> None:
    with pytest.raises(ConfigError):
        merge(RunConfig(), {"train": {"nope": 1}})
    with pytest.raises(ConfigError):
        merge(RunConfig(), {"nope": {}})


def test_lr_scales_with_batch() -> None:
    assert TrainConfig(base_lr=0.1, batch_size=128).lr == pytest.approx(0.1)
    assert TrainConfig(base_lr=0.1, batch_size=32).lr == pytest.approx(0.025)
    assert TrainConfig(base_lr=0.1, batch_size=32, lr_reference_batch=32).lr == pytest.approx(0.1)


def test_defaults_follow_the_spec() -> None:
    t, s = TrainConfig(), ScoreConfig()
    assert (t.temperature, t.num_shifts, t.proj_dim, t.width) == (0.5, 4, 128, 64)
    assert (t.momentum, t.weight_decay, t.lars_trust, t.optimizer) == (0.9, 1e-6, 0.001, "lars")
    assert (t.warmup_epochs, t.warmup_multiplier, t.base_lr) == (10.0, 10.0, 0.1)
    assert t.jitter == (0.4, 0.4, 0.4, 0.1) and t.jitter_p == 0.8 and t.gray_p == 0.2
    assert t.crop_scale == (0.08, 1.0) and t.blur is False
    assert (s.ensemble, s.crop_scale, s.score) == (10, 0.54, "paper")


def test_get_preset_unknown() -> None:
    with pytest.raises(ConfigError, match="unknown preset"):
        get_preset("huge")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_run_configs(name: str) -> None:
    cfg = get_preset(name)
    assert isinstance(cfg, RunConfig)
    assert cfg == PRESETS[name]
    assert from_dict(RunConfig, to_dict(cfg)) == cfg


def test_preset_overrides_applied_without_mutating_the_preset() -> None:
    before = dataclasses.replace(PRESETS["tiny"].train)
    cfg = get_preset("tiny", {"train": {"epochs": 9, "image_size": 16}, "score": {"ensemble": 2}})
    assert cfg.train.epochs == 9 and cfg.train.image_size == 16 and cfg.score.ensemble == 2
    assert cfg.train.width == PRESETS["tiny"].train.width == 4
    assert PRESETS["tiny"].train == before and PRESETS["tiny"].score.ensemble == 1
    with pytest.raises(ConfigError):
        get_preset("tiny", {"train": {"epoch": 1}})


def test_preset_values() -> None:
    paper, cpu = get_preset("paper"), get_preset("cpu")
    assert paper.train.width == 64 and paper.train.batch_size == 128 and paper.train.epochs == 1000
    assert paper.train.method == "full" and cpu.train.method == "csi"
    assert paper.score.score == "feat" and paper.score.ensemble == 10
    assert cpu.train.width == 16 and cpu.train.lr == pytest.approx(0.1)
