"""``flowclas-import`` on random weights in the authors' layouts, then prediction (ViT-B, tiny images).

The flow has 2 steps instead of their 16 (the importer reads the step count
from the checkpoint) to keep the files small; the DINOv2 file is a full ViT-B.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from official_formats import flowclas_state, lightning_checkpoint, write_lightning, write_official_files

from flowclas_ros.importer.cli import main as import_main
from flowclas_ros.importer.keymap import DROPPED, MAPPED, OfficialImportError, check_against, map_state
from flowclas_ros.model.checkpoint import load_checkpoint, trainable_state
from flowclas_ros.model.checkpoint_meta import sha256_file
from flowclas_ros.runtime.base import create_backend

STEPS = 2


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """The three files for the ALLO preset, and the imported checkpoint directory."""
    root = tmp_path_factory.mktemp("official")
    files = write_official_files(root / "files", "allo", steps=STEPS)
    out = root / "imported"
    argv = ["--checkpoint", str(files["checkpoint"]), "--dinov2", str(files["dinov2"])]
    argv += ["--rein", str(files["rein"]), "--preset", "allo", "--out", str(out)]
    assert import_main(argv) == 0
    return files, out


@pytest.fixture(scope="module")
def loaded(official):
    """The imported checkpoint, loaded once."""
    return load_checkpoint(official[1])


def test_import_writes_config_thresholds_and_provenance(official):
    files, out = official
    meta = json.loads((out / "config.json").read_text())
    model = meta["model"]
    assert model["backbone"]["name"] == "rein_dinov2_vitb14" and model["flow"]["variant"] == "official"
    assert model["flow"]["steps"] == STEPS
    assert model["preprocess"]["resize"] is False and model["preprocess"]["padding"] == "symmetric"
    assert model["preprocess"]["mean"] == [0.2083, 0.2124, 0.2146]
    assert model["preprocess"]["std"] == [0.2669, 0.27, 0.2711]
    assert meta["threshold"] == pytest.approx(0.47) and meta["image_threshold"] == pytest.approx(0.61)
    assert meta["embedded_backbone"] == "backbone.safetensors"
    sources = meta["provenance"]["sources"]
    for name in ("checkpoint", "dinov2", "rein"):
        assert sources[name]["sha256"] == sha256_file(files[name])
    assert meta["provenance"]["dropped_keys"] == [
        "image_threshold.value",
        "pixel_threshold.value",
        "prev_loss",
    ]


def test_imported_model_holds_their_tensors_and_predicts(official, loaded):
    files, out = official
    state = flowclas_state(768, steps=STEPS)
    ours = loaded.model.state_dict()
    assert torch.equal(ours["flow.module_list.4.perm"], state["model.flow_blocks.0.module_list.4.perm"])
    assert torch.equal(ours["base.mu"], state["model.base_dists.0.mu"])
    assert torch.equal(ours["backbone.reins.learnable_tokens_b"][0], torch.load(files["rein"])["state_dict"][
        "backbone.reins.learnable_tokens_b"][0])  # fmt: skip
    backend = create_backend("torch", out)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((28, 28), (31, 45))]
    predictions = backend.predict(images)
    assert [p.score_map.shape for p in predictions] == [(28, 28), (31, 45)]
    # the authors' preprocessing written out: pad the uint8 image with 0 (split evenly), then normalise
    image = images[1]
    padded = np.pad(image, ((5, 6), (5, 6), (0, 0)))  # 31x45 -> 42x56
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255.0
    mean, std = torch.tensor([0.2083, 0.2124, 0.2146]), torch.tensor([0.2669, 0.2700, 0.2711])
    x = (x - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.no_grad():
        z, _ = loaded.model.flow_forward(loaded.model.extract_features(x))
        log_p = (loaded.model.base.log_prob(z).mean(1) + 0.5 * np.log(2 * np.pi)).unsqueeze(1)
        up = torch.nn.functional.interpolate(torch.exp(log_p), size=x.shape[-2:], mode="bilinear")
    expected = (1.0 - up)[0, 0, 5:36, 5:50].numpy()
    spread = float(expected.max() - expected.min())
    assert spread > 1e-3
    assert np.abs(predictions[1].score_map - expected).max() <= 1e-5 * max(spread, 1.0)


def _run_import(files, tmp_path, checkpoint):
    cmd = [sys.executable, "-m", "flowclas_ros.importer.cli", "--checkpoint", str(checkpoint)]
    cmd += ["--dinov2", str(files["dinov2"]), "--rein", str(files["rein"]), "--preset", "city"]
    cmd += ["--out", str(tmp_path / "out")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_extra_key_is_a_one_line_error(official, tmp_path):
    files, _ = official
    state = flowclas_state(768, steps=STEPS)
    state["model.extra_head.weight"] = torch.zeros(3)
    bad = write_lightning(tmp_path / "extra.ckpt", lightning_checkpoint(state))
    result = _run_import(files, tmp_path, bad)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unexpected key(s) model.extra_head.weight" in lines[0], result.stderr
    assert not (tmp_path / "out").exists()


def test_every_rule_is_used_and_missing_or_misshaped_keys_fail():
    assert len(MAPPED) == 4 and len(DROPPED) == 4
    city = flowclas_state(768, steps=STEPS, seg_classes=20)
    mapped = map_state(city, "city.ckpt")
    assert any(k.startswith("model.seg_heads.0.") for k in mapped.dropped)
    assert mapped.steps == STEPS and mapped.proj_dim == 128 and mapped.channels == 768
    expected = dict(mapped.tensors)  # our names (test_expected_keys_match_the_built_model checks them)
    missing = dict(mapped.tensors)
    del missing["flow.module_list.5.subnet.conv3.weight"]
    mapped_missing = map_state({f"model.{_theirs(k)}": v for k, v in missing.items()}, "m.ckpt")
    with pytest.raises(OfficialImportError, match=r"missing flow\.module_list\.5\.subnet\.conv3\.weight"):
        check_against(mapped_missing, expected, "m.ckpt")
    wrong = dict(city)
    wrong["model.base_dists.0.mu"] = torch.zeros(767)
    with pytest.raises(OfficialImportError, match=r"wrong shape base\.mu \(767,\) \(expected \(768,\)\)"):
        check_against(map_state(wrong, "w.ckpt"), expected, "w.ckpt")
    with pytest.raises(OfficialImportError, match="non-tensor value"):
        map_state({**city, "model.norms.0.bias": [0.0]}, "n.ckpt")


def _theirs(ours: str) -> str:
    prefix = {
        "norm.": "norms.0.",
        "flow.": "flow_blocks.0.",
        "base.": "base_dists.0.",
        "proj_head.": "proj_heads.0.",
    }
    for mine, theirs in prefix.items():
        if ours.startswith(mine):
            return theirs + ours[len(mine) :]
    raise AssertionError(ours)


def test_expected_keys_match_the_built_model(loaded):
    mapped = map_state(flowclas_state(768, steps=STEPS, seg_classes=20), "city.ckpt")
    check_against(mapped, trainable_state(loaded.model), "city.ckpt")  # no error: the key lists agree
