"""VL4AD text-prompted outlier scorer on an open_clip CLIP model.

VL4AD (Zhong et al., arXiv 2409.17330) scores outliers with a vision-language
encoder and words only, no outlier data and no training:

1. Dense per-patch image embeddings (MaskCLIP value path, :mod:`.clip_dense`).
2. Cosine similarity of every patch to every prompt embedding; the class logit
   is the max over the class's prompts (max-logit prompt ensembling), divided
   by the prompt set's temperature.
3. Softmax over ID + OOD classes (merge groups are single classes).
4. Pixel score ``u = 1 - max_{c in ID} p_c``, bilinearly upsampled to the
   input. VL4AD writes ``-max p``; ``1 - max p`` ranks pixels identically and
   lies in ``[0, 1)``, like the flow's ``1 - exp(mean log p)``.

The text side is encoded once per prompt set and kept as a (non-persistent)
buffer, so a forward pass only runs the image tower, and an ONNX export holds
the text embeddings as constants. Steps 2-4 are the pure math of
:mod:`.anomaly_map` (embeddings in, scores out).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from flowclas_ros.model.checkpoint_meta import sha256_file
from flowclas_ros.model.vl4ad.anomaly_map import class_logits, outlier_score, stack_class_embeddings
from flowclas_ros.model.vl4ad.clip_dense import DenseClipEncoder
from flowclas_ros.model.vl4ad.config import TextScorerConfig
from flowclas_ros.model.vl4ad.prompts import PromptSet, load_prompt_set, resolve_classes, text_cache_key
from flowclas_ros.model.weights import WeightsFileError, read_state_dict

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TextScorerError(RuntimeError):
    """The text scorer cannot be built: bad model name, weights or prompts (message says which)."""


def resolve_text_config(cfg: TextScorerConfig) -> TextScorerConfig:
    """Returns a copy whose ``prompts`` is filled in from ``prompt_set`` if empty.

    Raises:
        TextScorerError: If neither is given.
        ConfigError: If the prompt file is invalid (names the file).
    """
    if cfg.prompts is not None:
        return dataclasses.replace(cfg)
    if not cfg.prompt_set:
        raise TextScorerError("text scorer: set text.prompt_set (a name or YAML path) or text.prompts")
    return dataclasses.replace(cfg, prompts=load_prompt_set(cfg.prompt_set))


# ----------------------------------------------------------------------------------------------------
# CLIP model construction.
# ----------------------------------------------------------------------------------------------------


def load_clip_weights(model: nn.Module, path: str | Path, sha256: str = "") -> None:
    """Loads a local open_clip state_dict into ``model`` without unpickling.

    Accepts ``.safetensors`` or a ``torch.save``'d dict of tensors (optionally
    under ``state_dict``, optionally with DDP's ``module.`` prefix).

    Raises:
        TextScorerError: Naming the file on a missing file, hash mismatch,
            unreadable file or key mismatch.
    """
    from open_clip.model import resize_pos_embed, resize_text_pos_embed

    path = Path(path)
    if not path.is_file():
        raise TextScorerError(f"{path}: CLIP weights file not found (text.weights_file)")
    if sha256 and sha256_file(path) != sha256.lower():
        raise TextScorerError(f"{path}: sha256 does not match text.weights_sha256 {sha256}")
    try:
        state = read_state_dict(path, ("state_dict",), what="CLIP weights")
    except WeightsFileError as exc:
        raise TextScorerError(
            f"{exc}; expected .safetensors or a torch.save'd state_dict (TorchScript archives such as "
            "OpenAI's original .pt files are not supported: use open_clip's open_clip_model.safetensors)"
        ) from exc
    state = {k.removeprefix("module."): v for k, v in state.items()}
    resize_pos_embed(state, model)
    resize_text_pos_embed(state, model)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise TextScorerError(
            f"{path}: weights do not fit the CLIP architecture ({detail}); check text.model / text.arch"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise TextScorerError(
            f"{path}: weights do not fit the CLIP architecture; missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]} (check text.model / text.arch)"
        )


def _warn_random_weights(name: str) -> None:
    if "pytest" in sys.modules:
        return
    message = (
        f"TEXT SCORER USES RANDOM CLIP WEIGHTS ({name}, text.weights: none). Its scores are meaningless; "
        "use text.weights: hub or file for real use."
    )
    logger.warning(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def create_clip_model(cfg: TextScorerConfig) -> nn.Module:
    """Builds the frozen open_clip CLIP model (eval mode, no grads) per ``cfg``.

    Raises:
        TextScorerError: Unknown architecture or tag, failed download, bad file.
    """
    import open_clip

    if cfg.model not in open_clip.list_models():
        raise TextScorerError(
            f"text.model {cfg.model!r} is not an open_clip architecture (see open_clip.list_models(); "
            "e.g. ViT-B-16, ViT-L-14)"
        )
    arch = dict(cfg.arch)
    if cfg.weights == "hub":
        if not open_clip.get_pretrained_cfg(cfg.model, cfg.pretrained):
            tags = open_clip.list_pretrained_tags_by_model(cfg.model)
            raise TextScorerError(
                f"text.pretrained {cfg.pretrained!r} is not an open_clip tag for {cfg.model}; known: {tags}"
            )
        try:
            model = open_clip.create_model(cfg.model, pretrained=cfg.pretrained, **arch)
        except Exception as exc:  # noqa: BLE001 - download / hub errors become one clear message
            raise TextScorerError(
                f"could not load open_clip weights {cfg.model}/{cfg.pretrained} from the hub "
                f"({type(exc).__name__}: {str(exc)[:200]}). Without internet, download them elsewhere and "
                "set text.weights: file and text.weights_file: PATH"
            ) from exc
    else:
        try:
            model = open_clip.create_model(cfg.model, pretrained=None, **arch)
        except Exception as exc:  # noqa: BLE001 - bad arch overrides
            raise TextScorerError(f"cannot build open_clip {cfg.model} with text.arch {arch}: {exc}") from exc
        if cfg.weights == "file":
            if not cfg.weights_file:
                raise TextScorerError("text.weights is 'file' but text.weights_file is empty")
            load_clip_weights(model, cfg.weights_file, cfg.weights_sha256)
        else:
            _warn_random_weights(cfg.model)
    model.eval()
    model.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------------
# The scorer module.
# ----------------------------------------------------------------------------------------------------


class TextScorer(nn.Module):
    """Per-pixel VL4AD outlier score from text prompts; frozen, eval only.

    Args:
        cfg: Scorer config; ``prompts`` is filled from ``prompt_set`` if empty.
        input_mean: Per-channel mean the incoming ``x`` was normalised with
            (the FlowCLAS preprocessing); re-normalised here to CLIP's statistics.
        input_std: Matching per-channel std.
        clip_model: An already built open_clip CLIP model (else built from ``cfg``).

    Attributes:
        cfg: The resolved config (``cfg.prompts`` is the active prompt set).
        class_names: Active classes, ID first (merged groups named ``a+b``).
        num_id: Number of ID classes.
        num_text_encodes: How many times prompts were encoded (cache check).
    """

    def __init__(
        self,
        cfg: TextScorerConfig,
        input_mean: tuple[float, float, float] = IMAGENET_MEAN,
        input_std: tuple[float, float, float] = IMAGENET_STD,
        clip_model: nn.Module | None = None,
    ) -> None:
        super().__init__()
        import open_clip

        self.cfg = resolve_text_config(cfg)
        clip = clip_model if clip_model is not None else create_clip_model(self.cfg)
        clip.eval().requires_grad_(False)
        try:
            self.image_encoder = DenseClipEncoder(clip.visual, self.cfg.dense)
        except ValueError as exc:
            raise TextScorerError(f"text.model {self.cfg.model}: {exc}") from exc
        self.clip = clip
        self.tokenizer = open_clip.get_tokenizer(self.cfg.model, context_length=clip.context_length)
        pre = open_clip.get_model_preprocess_cfg(clip)
        clip_mean = torch.tensor(pre.get("mean", open_clip.OPENAI_DATASET_MEAN), dtype=torch.float32)
        clip_std = torch.tensor(pre.get("std", open_clip.OPENAI_DATASET_STD), dtype=torch.float32)
        in_mean = torch.tensor(input_mean, dtype=torch.float32)
        in_std = torch.tensor(input_std, dtype=torch.float32)
        # x_clip = (x * in_std + in_mean - clip_mean) / clip_std = x * scale + shift
        self.register_buffer("input_scale", (in_std / clip_std).view(1, 3, 1, 1), persistent=False)
        self.register_buffer(
            "input_shift", ((in_mean - clip_mean) / clip_std).view(1, 3, 1, 1), persistent=False
        )
        if self.cfg.input_size is not None:
            self.image_encoder.grid_for(tuple(self.cfg.input_size))  # fail early on a bad size
        self.register_buffer("class_text_emb", torch.empty(0), persistent=False)
        self.num_text_encodes = 0
        self._text_key = ""
        self.class_names: tuple[str, ...] = ()
        self.num_id = 0
        self.train(False)
        self.set_prompts(self.cfg.prompts)

    def train(self, mode: bool = True) -> TextScorer:
        """The scorer is frozen: it always stays in eval mode."""
        return super().train(False)

    @property
    def temperature(self) -> float:
        """Softmax temperature of the active prompt set."""
        return float(self.cfg.prompts.temperature)

    def set_prompts(self, prompts: PromptSet | str | Path) -> bool:
        """Activates a prompt set; re-encodes text only if prompts/templates/classes changed.

        Args:
            prompts: A PromptSet, or a prompt-set name / YAML path.

        Returns:
            True if the text was (re-)encoded, False if the cached embeddings were reused.

        Not synchronised with ``forward``: call it between frames (e.g. under the
        lock that serialises inference), never concurrently with a forward pass.
        """
        if not isinstance(prompts, PromptSet):
            source = str(prompts)
            prompts = load_prompt_set(source)
            self.cfg.prompt_set = source
        key = text_cache_key(prompts)
        self.cfg.prompts = prompts
        if key == self._text_key:
            return False
        classes = resolve_classes(prompts)
        self.class_text_emb = self._encode(prompts, classes)
        self.class_names, self.num_id, self._text_key = classes.names, classes.num_id, key
        return True

    @torch.no_grad()
    def _encode(self, prompts: PromptSet, classes) -> torch.Tensor:
        """Encodes every (prompt, template) sentence once -> ``(C, K, D)`` normalised."""
        unique = list(dict.fromkeys(p for cls in classes.prompts for p in cls))
        sentences = [t.format(p) for p in unique for t in prompts.templates]
        device = self.input_scale.device
        tokens = self.tokenizer(sentences).to(device)
        emb = torch.cat([self._encode_text(chunk).float() for chunk in tokens.split(256)])
        # Template ensembling: mean of normalised sentence embeddings, re-normalised.
        emb = F.normalize(emb.view(len(unique), len(prompts.templates), -1).mean(dim=1), dim=-1)
        position = {p: i for i, p in enumerate(unique)}
        self.num_text_encodes += 1
        return stack_class_embeddings(emb, [[position[p] for p in cls] for cls in classes.prompts])

    def _encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Normalised text embeddings; skips the padding positions when that is exact.

        Standard CLIP text towers use a causal mask and pool at the EOT token
        (the highest token id), so positions after the last EOT cannot change
        the result: running only the first ``n`` positions is exact and ~7x
        cheaper for short prompts (about 10 of 77 tokens). Other text towers
        fall back to ``encode_text``.
        """
        import open_clip

        clip = self.clip
        exact = (
            type(clip) is open_clip.CLIP
            and clip.text_pool_type == "argmax"
            and isinstance(clip.attn_mask, torch.Tensor)
            and getattr(clip, "cls_emb", None) is None
        )
        if not exact:
            return clip.encode_text(tokens, normalize=True)
        n = int(tokens.argmax(dim=-1).max()) + 1
        tokens = tokens[:, :n]
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype) + clip.positional_embedding[:n].to(cast_dtype)
        x = clip.ln_final(clip.transformer(x, attn_mask=clip.attn_mask[:n, :n]))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        proj = clip.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else (x @ proj if proj is not None else x)
        return F.normalize(x, dim=-1)

    def clip_input_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """The size CLIP sees for a model input of ``image_hw``."""
        if self.cfg.input_size is not None:
            return int(self.cfg.input_size[0]), int(self.cfg.input_size[1])
        ph, pw = self.image_encoder.patch_size
        h, w = image_hw
        return max(ph, round(h / ph) * ph), max(pw, round(w / pw) * pw)

    def prepare(self, image_hw: tuple[int, int]) -> None:
        """Precomputes size-dependent constants for a model input size (call before ONNX export)."""
        self.image_encoder.prepare(self.clip_input_size(image_hw))

    def class_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits at patch resolution ``(B, C, h, w)`` for model-normalised ``x`` (B, 3, H, W)."""
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x = x * self.input_scale.to(x.dtype) + self.input_shift.to(x.dtype)
        size = self.clip_input_size((h, w))
        if size != (h, w):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return class_logits(self.image_encoder(x), self.class_text_emb, self.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel outlier score.

        Args:
            x: Images ``(B, 3, H, W)`` normalised with ``input_mean``/``input_std``.

        Returns:
            ``(B, H, W)`` float32 score in ``[0, 1)``; higher is more anomalous.
        """
        h, w = int(x.shape[-2]), int(x.shape[-1])
        score = outlier_score(self.class_logits(x), self.num_id)
        return F.interpolate(score[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def create_text_scorer(
    cfg: TextScorerConfig | None,
    input_mean: tuple[float, float, float] = IMAGENET_MEAN,
    input_std: tuple[float, float, float] = IMAGENET_STD,
) -> TextScorer | None:
    """Builds the scorer, or returns None when ``cfg`` is None (text scoring disabled)."""
    if cfg is None:
        return None
    return TextScorer(cfg, input_mean=input_mean, input_std=input_std)
