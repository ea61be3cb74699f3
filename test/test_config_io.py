from __future__ import annotations

import json

import pytest

from flowclas_ros.config_io import ConfigError, apply_overrides, from_dict, load, save, to_dict
from flowclas_ros.model.config import ModelConfig


def test_round_trip_yaml_and_json(tmp_path):
    cfg = ModelConfig()
    cfg.flow.steps = 4
    cfg.preprocess.input_size = (56, 70)
    for name in ("m.yaml", "m.json"):
        save(cfg, tmp_path / name)
        again = load(ModelConfig, tmp_path / name)
        assert again == cfg


def test_unknown_key_names_the_dotted_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("flow:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"flow\.stepz") as info:
        load(ModelConfig, path)
    assert str(path) in str(info.value)


def test_wrong_type_and_literal_rejected():
    with pytest.raises(ConfigError, match=r"flow\.steps: expected an integer"):
        from_dict(ModelConfig, {"flow": {"steps": "many"}})
    with pytest.raises(ConfigError, match=r"backbone\.weights"):
        from_dict(ModelConfig, {"backbone": {"weights": "internet"}})
    with pytest.raises(ConfigError, match="expected 2 items"):
        from_dict(ModelConfig, {"preprocess": {"input_size": [1, 2, 3]}})


def test_overrides_parse_yaml_values():
    data = apply_overrides(
        to_dict(ModelConfig()), ["flow.steps=2", "score.blur_sigma=1.5", "backbone.layers=[-1,-2]"]
    )
    cfg = from_dict(ModelConfig, data)
    assert cfg.flow.steps == 2 and cfg.score.blur_sigma == 1.5 and cfg.backbone.layers == [-1, -2]
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["nonsense"])


def test_unparsable_file_is_named(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json: cannot parse"):
        load(ModelConfig, path)
    assert json.loads(json.dumps(to_dict(ModelConfig())))
