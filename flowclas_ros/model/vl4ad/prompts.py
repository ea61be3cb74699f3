"""Text prompt sets for the VL4AD outlier scorer (``prompt_sets/*.yaml`` beside this module).

A prompt set describes in words what is normal in a scene (in-distribution,
"ID" classes, each with several prompts) and, optionally, what outliers to
expect (OOD classes). See ``prompt_sets/planetary_rover.yaml`` for the
schema; :class:`PromptSet` documents every key.

Resolution turns a prompt set into the flat class list the scorer uses:
merge groups become one class whose prompts are the concatenation of its
members' prompts (VL4AD "class merging"), then the OOD classes follow.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from flowclas_ros.config_io import ConfigError, load

PROMPT_DIR_ENV = "FLOWCLAS_PROMPT_DIR"
"""Environment variable naming an extra folder searched for prompt-set names."""


def _default_templates() -> list[str]:
    return ["a photo of {}."]


@dataclass
class PromptSet:
    """A scene description in words, validated on construction.

    Attributes:
        temperature: Softmax temperature over cosine similarities (CLIP's own
            logit scale of 100 corresponds to 0.01). Must be > 0.
        templates: Sentence templates, each with exactly one ``{}``; a prompt's
            embedding is the normalised mean over its templated sentences
            (standard CLIP prompt engineering). ``["{}"]`` uses prompts verbatim.
        id_classes: In-distribution classes, ``name -> [prompt, ...]``. The
            class logit is the max over its prompts (max-logit ensembling).
        merge: Groups of ID class names merged at test time into one class
            (their prompts are concatenated). A class may be in one group only.
        ood: Expected outlier classes, ``name -> [prompt, ...]``. They enter the
            softmax but not the max over ID probabilities, so a patch that looks
            like them gets a high outlier score.
        description: Free text shown in logs and reports.
    """

    temperature: float = 0.01
    templates: list[str] = field(default_factory=_default_templates)
    id_classes: dict[str, list[str]] = field(default_factory=dict)
    merge: list[list[str]] = field(default_factory=list)
    ood: dict[str, list[str]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        _validate(self)


def _check_prompts(section: str, classes: dict[str, list[str]]) -> None:
    for name, prompts in classes.items():
        if not name.strip():
            raise ValueError(f"{section}: class names must be non-empty strings")
        if not isinstance(prompts, list) or not prompts:
            raise ValueError(f"{section}.{name}: class has no prompts; give a non-empty list of strings")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str) or not prompt.strip():
                raise ValueError(f"{section}.{name}[{i}]: prompt must be a non-empty string, got {prompt!r}")


def _validate(ps: PromptSet) -> None:
    if not ps.temperature > 0:
        raise ValueError(f"temperature must be > 0, got {ps.temperature}")
    if not ps.templates:
        raise ValueError("templates must be a non-empty list (use ['{}'] for verbatim prompts)")
    for i, template in enumerate(ps.templates):
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"templates[{i}]: {template!r} must contain exactly one '{{}}'")
    if not ps.id_classes:
        raise ValueError("id_classes: at least one in-distribution class is required")
    _check_prompts("id_classes", ps.id_classes)
    _check_prompts("ood", ps.ood)
    both = sorted(set(ps.id_classes) & set(ps.ood))
    if both:
        raise ValueError(f"class(es) {', '.join(both)} appear in both id_classes and ood")
    seen: dict[str, int] = {}
    for g, group in enumerate(ps.merge):
        if len(group) < 2:
            raise ValueError(f"merge[{g}]: a merge group needs at least two classes, got {group}")
        for name in group:
            if name in ps.ood:
                raise ValueError(f"merge[{g}]: {name!r} is an ood class; only id_classes can be merged")
            if name not in ps.id_classes:
                raise ValueError(
                    f"merge[{g}]: unknown class {name!r}; id_classes are {', '.join(ps.id_classes)}"
                )
            if name in seen:
                raise ValueError(f"merge[{g}]: class {name!r} is already in merge[{seen[name]}]")
            seen[name] = g


@dataclass(frozen=True)
class ResolvedClasses:
    """The flat class list a scorer uses: ID classes (merged) first, then OOD.

    Attributes:
        names: Class names; a merged class is named ``a+b``.
        prompts: Prompts per class, same order as ``names``.
        num_id: How many leading classes are in-distribution.
    """

    names: tuple[str, ...]
    prompts: tuple[tuple[str, ...], ...]
    num_id: int


def resolve_classes(ps: PromptSet) -> ResolvedClasses:
    """Applies merge groups and appends OOD classes.

    A merge group takes the position of its earliest member in ``id_classes``
    and is named by joining its members (in group order) with ``+``.
    """
    group_of = {name: tuple(group) for group in ps.merge for name in group}
    names: list[str] = []
    prompts: list[tuple[str, ...]] = []
    for name in ps.id_classes:
        group = group_of.get(name)
        if group is None:
            names.append(name)
            prompts.append(tuple(ps.id_classes[name]))
            continue
        merged = "+".join(group)
        if merged not in names:
            names.append(merged)
            prompts.append(tuple(p for member in group for p in ps.id_classes[member]))
    num_id = len(names)
    for name, ood_prompts in ps.ood.items():
        names.append(name)
        prompts.append(tuple(ood_prompts))
    return ResolvedClasses(tuple(names), tuple(prompts), num_id)


def text_cache_key(ps: PromptSet) -> str:
    """Hash of everything that determines the text embeddings (not temperature)."""
    classes = resolve_classes(ps)
    payload = {"templates": ps.templates, "names": classes.names, "prompts": classes.prompts}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def bundled_prompt_dir() -> Path:
    """The prompt sets shipped as package data (``prompt_sets/`` beside this module).

    Found the same way from the source tree, a pip install (``setup.cfg`` package_data) and a
    colcon install (CMakeLists.txt installs the package directory whole).
    """
    return Path(__file__).resolve().parent / "prompt_sets"


def _search_dirs() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get(PROMPT_DIR_ENV, "").split(os.pathsep) if d]
    return [*dirs, bundled_prompt_dir()]


def available_prompt_sets() -> list[str]:
    """Names of the prompt sets found in the search folders."""
    return sorted({p.stem for d in _search_dirs() if d.is_dir() for p in d.glob("*.yaml")})


def find_prompt_file(name_or_path: str | Path) -> Path:
    """Resolves a prompt-set name (``planetary_rover``) or a YAML path to a file.

    Raises:
        ConfigError: When neither an existing file nor a known name.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    for folder in _search_dirs():
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"prompt set {str(name_or_path)!r}: no such file and no such name; "
        f"known names: {', '.join(available_prompt_sets()) or '(none)'}"
    )


def load_prompt_set(name_or_path: str | Path) -> PromptSet:
    """Loads and validates a prompt set by name or path.

    Raises:
        ConfigError: Naming the file and the offending key on any problem.
    """
    return load(PromptSet, find_prompt_file(name_or_path))
