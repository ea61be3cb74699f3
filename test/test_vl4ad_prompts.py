from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from flowclas_ros.config_io import ConfigError, from_dict, to_dict
from flowclas_ros.model.vl4ad.prompts import (
    PromptSet,
    available_prompt_sets,
    bundled_prompt_dir,
    find_prompt_file,
    load_prompt_set,
    resolve_classes,
    text_cache_key,
)

VALID = """
temperature: 0.02
templates: ["a photo of {}."]
id_classes:
  terrain: ["sand", "regolith"]
  rock: ["a rock"]
  boulder: ["a boulder", "big rock"]
  sky: ["sky"]
merge: [[rock, boulder]]
ood:
  cable: ["a cable"]
"""


def _write(tmp_path: Path, text: str, name: str = "scene.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_bundled_sets_load_and_resolve():
    names = available_prompt_sets()
    assert {"planetary_rover", "orbital_inspection", "road"} <= set(names)
    for name in ("planetary_rover", "orbital_inspection", "road"):
        ps = load_prompt_set(name)
        classes = resolve_classes(ps)
        assert 1 <= classes.num_id < len(classes.names)  # every shipped set has OOD prompts
        assert all(classes.prompts)
    road = resolve_classes(load_prompt_set("road"))
    assert "truck+bus+train" in road.names[: road.num_id]
    assert "lost_cargo" in road.names[road.num_id :]
    orbital = load_prompt_set(bundled_prompt_dir() / "orbital_inspection.yaml")
    assert {"solar_panel", "truss", "mli_blanket", "earth", "space"} <= set(orbital.id_classes)


def test_resolve_merges_in_place_and_appends_ood(tmp_path):
    ps = load_prompt_set(_write(tmp_path, VALID))
    classes = resolve_classes(ps)
    assert classes.names == ("terrain", "rock+boulder", "sky", "cable")
    assert classes.num_id == 3
    assert classes.prompts[1] == ("a rock", "a boulder", "big rock")
    assert classes.prompts[3] == ("a cable",)
    assert ps.temperature == pytest.approx(0.02)


def test_cache_key_ignores_temperature_but_not_prompts(tmp_path):
    ps = load_prompt_set(_write(tmp_path, VALID))
    warmer = PromptSet(**{**to_dict(ps), "temperature": 0.5})
    assert text_cache_key(ps) == text_cache_key(warmer)
    changed = to_dict(ps)
    changed["id_classes"]["sky"] = ["sky", "clouds"]
    assert text_cache_key(ps) != text_cache_key(from_dict(PromptSet, changed))
    unmerged = PromptSet(**{**to_dict(ps), "merge": []})
    assert text_cache_key(ps) != text_cache_key(unmerged)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (VALID + "oods: {x: [y]}\n", "unknown config key(s) oods"),
        (VALID.replace('sky: ["sky"]', "sky: []"), "id_classes.sky: class has no prompts"),
        (VALID.replace("[[rock, boulder]]", "[[rock, stone]]"), "merge[0]: unknown class 'stone'"),
        (VALID.replace("[[rock, boulder]]", "[[rock]]"), "merge[0]: a merge group needs at least two"),
        (VALID.replace("[[rock, boulder]]", "[[rock, cable]]"), "'cable' is an ood class"),
        (VALID.replace("[[rock, boulder]]", "[[rock, boulder], [boulder, sky]]"), "already in merge[0]"),
        (VALID.replace("cable:", "sky:"), "sky appear in both id_classes and ood"),
        (VALID.replace('rock: ["a rock"]', 'rock: ["a rock", 3]'), "id_classes.rock[1]: expected a string"),
        (VALID.replace('rock: ["a rock"]', 'rock: ["a rock", ""]'), "id_classes.rock[1]: prompt must be"),
        (VALID.replace('rock: ["a rock"]', 'rock: "a rock"'), "id_classes.rock: expected a list"),
        (VALID.replace('["a photo of {}."]', '["a photo"]'), "templates[0]: 'a photo' must contain exactly"),
        (VALID.replace("temperature: 0.02", "temperature: 0"), "temperature must be > 0"),
        ("temperature: 0.01\n", "at least one in-distribution class"),
    ],
)
def test_validation_errors_name_file_and_key(tmp_path, body, expected):
    path = _write(tmp_path, body, name="bad_scene.yaml")
    with pytest.raises(ConfigError) as info:
        load_prompt_set(path)
    message = str(info.value)
    assert "bad_scene.yaml" in message
    assert expected in message


def test_unknown_name_lists_known_sets():
    with pytest.raises(ConfigError, match="no such file and no such name; known names: .*planetary_rover"):
        find_prompt_file("moon_base_alpha")


def test_env_folder_is_searched(tmp_path, monkeypatch):
    _write(tmp_path, VALID, name="my_site.yaml")
    monkeypatch.setenv("FLOWCLAS_PROMPT_DIR", str(tmp_path))
    assert resolve_classes(load_prompt_set("my_site")).names[1] == "rock+boulder"
