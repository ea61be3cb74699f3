"""model/weights.py: the one weights-file reader (safetensors, torch.save without code), wrappers, errors."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from flowclas_ros.model.weights import WeightsFileError, read_state_dict


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_reads_safetensors_and_unwraps_torch_save_files(tmp_path):
    state = {"w": torch.arange(4.0)}
    save_file(state, str(tmp_path / "a.safetensors"))
    assert torch.equal(read_state_dict(tmp_path / "a.safetensors")["w"], state["w"])
    torch.save({"model": {"state_dict": state}}, tmp_path / "b.pth")
    assert list(read_state_dict(tmp_path / "b.pth")) == ["w"]  # nested wrappers unwrap in order
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "c.ckpt")
    assert list(read_state_dict(tmp_path / "c.ckpt", ("state_dict",))) == ["w"]


def test_pickled_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"w": _Evil()}, handle)
    with pytest.raises(WeightsFileError, match=r"evil\.pth: cannot read weights \("):
        read_state_dict(path)
    torch.save({"w": _Evil()}, tmp_path / "evil_zip.pth")
    with pytest.raises(WeightsFileError, match="cannot read weights"):
        read_state_dict(tmp_path / "evil_zip.pth")
    assert not (tmp_path / "pwned").exists()


def test_errors_name_the_file_and_what_it_holds(tmp_path):
    with pytest.raises(WeightsFileError, match=r"nope\.pth: CLIP weights file not found"):
        read_state_dict(tmp_path / "nope.pth", what="CLIP weights")
    torch.save({"w": torch.zeros(1), "step": 3}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsFileError, match="expected a state dict of tensors"):
        read_state_dict(tmp_path / "mixed.pth")
    torch.save({"w": torch.zeros(1)}, tmp_path / "bare.pt")
    with pytest.raises(WeightsFileError, match="expected a dict with a 'model' state dict") as err:
        read_state_dict(tmp_path / "bare.pt", ("model",), require_wrapper=True)
    assert err.value.reason.startswith("expected") and err.value.path == tmp_path / "bare.pt"
    (tmp_path / "torn.safetensors").write_bytes(b"\x08\x00\x00")
    with pytest.raises(WeightsFileError, match=r"torn\.safetensors: cannot read weights"):
        read_state_dict(tmp_path / "torn.safetensors")
