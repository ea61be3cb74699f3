"""The VL4AD text scorer on a tiny random-init open_clip ViT (weights: none)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from flowclas_ros.config_io import from_dict, to_dict
from flowclas_ros.model.vl4ad.anomaly_map import class_logits
from flowclas_ros.model.vl4ad.prompts import PromptSet, load_prompt_set
from flowclas_ros.model.vl4ad.text_scorer import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TextScorer,
    TextScorerConfig,
    TextScorerError,
    create_text_scorer,
)

# A tiny ViT-B-16-shaped CLIP: 64x64 native input (4x4 patches of 16), 2 blocks, 32-d joint space.
TINY_ARCH = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TWO_CLASSES = PromptSet(
    temperature=0.05, templates=["{}"], id_classes={"sand": ["sand"], "sky": ["sky", "clouds"]}
)


def _cfg(**kw) -> TextScorerConfig:
    kw.setdefault("prompt_set", "planetary_rover")
    kw.setdefault("weights", "none")
    return TextScorerConfig(model="ViT-B-16", arch=TINY_ARCH, **kw)


@pytest.fixture(scope="module")
def scorer() -> TextScorer:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    return TextScorer(_cfg())


def _self_only_mask(n: int) -> torch.Tensor:
    mask = torch.full((n, n), float("-inf"))
    return mask.fill_diagonal_(0.0)


def test_shapes_finite_and_range(scorer):
    with torch.no_grad():
        for size in ((64, 64), (70, 90), (128, 96)):
            x = torch.randn(2, 3, *size)
            score = scorer(x)
            assert score.shape == (2, *size)
            assert score.dtype == torch.float32
            assert torch.isfinite(score).all()
            assert (score >= 0).all() and (score < 1).all()
    assert scorer.class_names[: scorer.num_id] == ("sand+gravel", "rock+bedrock", "shadow", "sky", "rover")
    assert scorer.class_text_emb.shape[:2] == (len(scorer.class_names), 10)  # merged sand+gravel: 10 prompts
    torch.testing.assert_close(scorer.class_text_emb.norm(dim=-1), torch.ones(10, 10))
    assert not any(p.requires_grad for p in scorer.parameters())
    scorer.train()
    assert not scorer.training and not scorer.clip.training


def test_dense_path_equals_last_block_with_self_only_attention(scorer):
    """MaskCLIP's value path == the unchanged last block when each token attends only to itself."""
    enc = scorer.image_encoder
    visual = enc.visual
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = visual._embeds(x)  # open_clip's own embedding (native size)
        for block in visual.transformer.resblocks[:-1]:
            tokens = block(tokens)
        torch.testing.assert_close(enc.tokens_before_last_block(x), tokens)
        last = visual.transformer.resblocks[-1]
        mask = _self_only_mask(tokens.shape[1])
        reference = visual.ln_post(last(tokens, attn_mask=mask)[:, 1:]) @ visual.proj
        dense = enc(x)
        assert dense.shape == (2, 32, 4, 4)
        torch.testing.assert_close(dense.flatten(2).transpose(1, 2), reference, rtol=1e-4, atol=1e-5)
        # value_only variant: just out_proj(v), i.e. the masked attention output, no residual / MLP.
        enc.variant = "value_only"
        try:
            value = last.attn(last.ln_1(tokens), last.ln_1(tokens), last.ln_1(tokens), attn_mask=mask)[0]
            expected = visual.ln_post(value[:, 1:]) @ visual.proj
            torch.testing.assert_close(enc(x).flatten(2).transpose(1, 2), expected, rtol=1e-4, atol=1e-5)
        finally:
            enc.variant = "maskclip"


def test_positional_embedding_interpolated_and_cached(scorer):
    enc = scorer.image_encoder
    assert enc.positional_embedding((4, 4)) is enc.visual.positional_embedding
    table = enc.positional_embedding((6, 5))
    assert table.shape == (1 + 30, 64)
    assert enc.positional_embedding((6, 5)) is table
    torch.testing.assert_close(table[0], enc.visual.positional_embedding[0])  # class position kept
    with pytest.raises(ValueError, match="not a multiple of the CLIP patch size 16x16"):
        enc(torch.randn(1, 3, 70, 64))


def test_input_is_renormalised_to_clip_statistics(scorer):
    raw = torch.rand(1, 3, 64, 64)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    clip_mean = torch.tensor((0.48145466, 0.4578275, 0.40821073)).view(1, 3, 1, 1)
    clip_std = torch.tensor((0.26862954, 0.26130258, 0.27577711)).view(1, 3, 1, 1)
    with torch.no_grad():
        got = scorer.class_logits((raw - mean) / std)
        expected = class_logits(
            scorer.image_encoder((raw - clip_mean) / clip_std), scorer.class_text_emb, scorer.temperature
        )
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_text_embeddings_are_clip_text_features():
    """Equal to open_clip's full-length encode_text (the scorer skips padding), template mean, padding."""
    torch.manual_seed(1)
    prompts = PromptSet(
        templates=["{}", "a long photo of {} seen by a rover camera on a dusty day."],
        id_classes={"sand": ["sand"], "sky": ["sky", "bright blue clouds at noon"]},
    )
    scorer = TextScorer(_cfg(prompt_set="", prompts=prompts))
    sentences = [
        t.format(p) for p in ("sand", "sky", "bright blue clouds at noon") for t in prompts.templates
    ]
    with torch.no_grad():
        direct = scorer.clip.encode_text(scorer.tokenizer(sentences), normalize=True)
        torch.testing.assert_close(
            scorer._encode_text(scorer.tokenizer(sentences)), direct, rtol=1e-5, atol=1e-5
        )
    per_prompt = F.normalize(direct.view(3, 2, -1).mean(dim=1), dim=-1)
    torch.testing.assert_close(scorer.class_text_emb[0, 0], per_prompt[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(scorer.class_text_emb[0, 1], per_prompt[0])  # padded by repetition
    torch.testing.assert_close(scorer.class_text_emb[1], per_prompt[1:], rtol=1e-5, atol=1e-5)


def test_text_cache_hit_and_invalidation():
    torch.manual_seed(2)
    scorer = TextScorer(_cfg(prompt_set="", prompts=TWO_CLASSES))
    calls = {"n": 0}
    real_encode = scorer._encode_text

    def counting_encode(*args, **kwargs):
        calls["n"] += 1
        return real_encode(*args, **kwargs)

    scorer._encode_text = counting_encode  # spy: the real text encoder still runs
    assert scorer.num_text_encodes == 1
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first = scorer(x)
        for _ in range(3):
            torch.testing.assert_close(scorer(x), first)
    assert calls["n"] == 0  # frames never touch the text encoder

    assert scorer.set_prompts(PromptSet(**to_dict(TWO_CLASSES))) is False  # equal set: cache hit
    warmer = PromptSet(**{**to_dict(TWO_CLASSES), "temperature": 1.0})
    assert scorer.set_prompts(warmer) is False  # temperature only: no re-encode, but it takes effect
    assert calls["n"] == 0 and scorer.temperature == 1.0
    with torch.no_grad():
        assert not torch.allclose(scorer(x), first)

    with_ood = PromptSet(**{**to_dict(TWO_CLASSES), "ood": {"cable": ["a cable"]}})
    assert scorer.set_prompts(with_ood) is True
    assert calls["n"] == 1 and scorer.num_text_encodes == 2
    assert scorer.class_names == ("sand", "sky", "cable") and scorer.num_id == 2
    assert scorer.set_prompts(with_ood) is False and calls["n"] == 1

    assert scorer.set_prompts("road") is True  # by name, from the packaged prompt sets
    assert calls["n"] == 2 and scorer.cfg.prompt_set == "road"
    assert scorer.cfg.prompts == load_prompt_set("road")


def test_config_roundtrip_embeds_prompts(scorer):
    data = to_dict(scorer.cfg)
    assert data["prompt_set"] == "planetary_rover"
    assert data["prompts"]["ood"]["cable"][0] == "a cable"
    again = from_dict(TextScorerConfig, data)
    assert again == scorer.cfg
    assert create_text_scorer(None) is None


def test_file_weights_roundtrip_and_errors(scorer, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in scorer.clip.state_dict().items()}
    st_path = tmp_path / "tiny_clip.safetensors"
    save_file(state, str(st_path))
    pt_path = tmp_path / "tiny_clip.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, pt_path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = scorer(x)
        sha = hashlib.sha256(st_path.read_bytes()).hexdigest()
        for path, digest in ((st_path, sha), (pt_path, "")):
            loaded = TextScorer(_cfg(weights="file", weights_file=str(path), weights_sha256=digest))
            torch.testing.assert_close(loaded(x), expected)

    with pytest.raises(TextScorerError, match="tiny_clip.safetensors: sha256 does not match"):
        TextScorer(_cfg(weights="file", weights_file=str(st_path), weights_sha256="0" * 64))
    with pytest.raises(TextScorerError, match="nope.safetensors: CLIP weights file not found"):
        TextScorer(_cfg(weights="file", weights_file=str(tmp_path / "nope.safetensors")))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"not a safetensors file")
    with pytest.raises(TextScorerError, match="corrupt.safetensors: cannot read CLIP weights"):
        TextScorer(_cfg(weights="file", weights_file=str(corrupt)))
    smaller = {**TINY_ARCH, "embed_dim": 16}
    with pytest.raises(TextScorerError, match="weights do not fit the CLIP architecture"):
        TextScorer(
            TextScorerConfig(weights="file", weights_file=str(st_path), arch=smaller, prompt_set="road")
        )
    with pytest.raises(TextScorerError, match="weights_file is empty"):
        TextScorer(_cfg(weights="file"))


def test_config_errors_are_clear():
    with pytest.raises(TextScorerError, match="'ViT-Q-99' is not an open_clip architecture"):
        TextScorer(TextScorerConfig(model="ViT-Q-99", weights="none", prompt_set="road"))
    with pytest.raises(TextScorerError, match="'no_such_tag' is not an open_clip tag for ViT-B-16; known:"):
        TextScorer(
            TextScorerConfig(model="ViT-B-16", weights="hub", pretrained="no_such_tag", prompt_set="road")
        )
    with pytest.raises(TextScorerError, match="set text.prompt_set"):
        TextScorer(_cfg(prompt_set=""))
    with pytest.raises(ValueError, match="not a multiple of the CLIP patch size"):
        TextScorer(_cfg(input_size=(60, 64)))


def test_onnx_export_of_dense_scoring_matches_torch(scorer, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    size = (80, 96)  # non-native grid: the interpolated position table becomes a constant
    scorer.prepare(size)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = scorer(x).numpy()
    path = tmp_path / "text_scorer.onnx"
    torch.onnx.export(
        scorer, (x,), str(path), opset_version=17, dynamo=False, input_names=["image"], output_names=["score"]
    )
    model = onnx.load(str(path))
    constants = [onnx.numpy_helper.to_array(init) for init in model.graph.initializer]
    constants += [
        onnx.numpy_helper.to_array(attr.t)
        for node in model.graph.node
        if node.op_type == "Constant"
        for attr in node.attribute
        if attr.name == "value"
    ]
    shapes = [c.shape for c in constants]
    assert (49408, 64) not in shapes  # the text tower is not in the graph, only its cached output
    text = scorer.class_text_emb.numpy()
    assert any(c.size == text.size and np.allclose(c.reshape(text.shape), text) for c in constants)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4)
