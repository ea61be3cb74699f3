"""launch/anomaly.launch.py: static checks everywhere, a real launch where launch_ros imports."""

from __future__ import annotations

import ast
import importlib.util
import math
import re
from pathlib import Path

import pytest
import yaml

from flowclas_ros.ros.launch_support import (
    RVIZ_INPUT_TOPIC,
    RVIZ_OVERLAY_TOPIC,
    file_parameters,
    rviz_config_text,
    rviz_topics,
    topic_list,
)
from flowclas_ros.ros.params import parameter_names, validate

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "anomaly.launch.py"
REQUIRED_ARGUMENTS = {
    "params_file",
    "checkpoint",
    "image_topics",
    "backend",
    "namespace",
    "use_sim_time",
    "rviz",
}


def _tree() -> ast.Module:
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _assigned(name: str) -> ast.expr:
    for node in ast.walk(_tree()):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in node.targets
        ):
            return node.value
    raise AssertionError(f"{LAUNCH_FILE.name} assigns no {name}")


def _declared_arguments() -> set[str]:
    arguments = _assigned("arguments")
    assert isinstance(arguments, ast.List)
    return {ast.literal_eval(item.elts[0]) for item in arguments.elts if isinstance(item, ast.Tuple)}


def test_launch_arguments_are_declared_and_map_to_node_parameters():
    declared = _declared_arguments()
    assert REQUIRED_ARGUMENTS <= declared, REQUIRED_ARGUMENTS - declared
    mapping = ast.literal_eval(_assigned("PARAMETER_ARGUMENTS"))
    assert set(mapping) <= declared, set(mapping) - declared
    unknown = set(mapping.values()) - parameter_names()
    assert not unknown, f"launch file passes parameters the node does not declare: {unknown}"
    # Every argument is used (declared ones not in the mapping are read by name in the file).
    source = LAUNCH_FILE.read_text()
    for argument in declared - set(mapping):
        assert f'LaunchConfiguration("{argument}")' in source, argument


def test_launch_references_existing_installed_files():
    constants = {
        n.value for n in ast.walk(_tree()) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    referenced = {c for c in constants if re.fullmatch(r"\w[\w.-]*\.(yaml|rviz)", c)}
    assert {"anomaly.yaml", "anomaly.rviz"} <= referenced
    for name in referenced:
        assert (REPO_ROOT / "config" / name).is_file(), name
    cmake = " ".join((REPO_ROOT / "CMakeLists.txt").read_text().split())
    assert re.search(r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    assert "install(PROGRAMS scripts/anomaly_node DESTINATION lib/${PROJECT_NAME})" in cmake


def test_params_file_sets_only_declared_valid_parameters():
    params = file_parameters(REPO_ROOT / "config" / "anomaly.yaml")
    assert params, "config/anomaly.yaml has no anomaly_node section"
    assert not set(params) - parameter_names()
    for name, value in params.items():
        if name in parameter_names() - {"use_sim_time"}:
            assert validate(name, value) is None, (name, value)
    assert math.isnan(params["threshold"])  # default: the checkpoint's calibrated threshold


def test_rviz_config_shows_input_and_overlay_of_the_default_camera():
    rviz = yaml.safe_load((REPO_ROOT / "config" / "anomaly.rviz").read_text())
    topics = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"]]
    assert topics == [RVIZ_INPUT_TOPIC, RVIZ_OVERLAY_TOPIC]
    assert rviz_topics("", {}) == (RVIZ_INPUT_TOPIC, RVIZ_OVERLAY_TOPIC)  # template = default names


def test_rviz_config_follows_namespace_and_camera():
    template = (REPO_ROOT / "config" / "anomaly.rviz").read_text()
    text = rviz_config_text(template, "/robot", {"image_topics": ["/front/color/image_raw/compressed", "/x"]})
    topics = [d["Topic"]["Value"] for d in yaml.safe_load(text)["Visualization Manager"]["Displays"]]
    assert topics == ["/front/color/image_raw", "/robot/anomaly_node/front_color/overlay"]
    named = rviz_config_text(template, "", {"image_topics": ["/a/image"], "camera_names": ["left"]})
    assert "Value: /anomaly_node/left/overlay" in named


def test_launch_support_helpers(tmp_path):
    assert topic_list("['/a/image_raw', '/b']") == ["/a/image_raw", "/b"]
    assert topic_list("/a, /b") == ["/a", "/b"]
    params = tmp_path / "p.yaml"
    params.write_text(
        "/**:\n  ros__parameters:\n    backend: torch\n"
        "/robot/anomaly_node:\n  ros__parameters:\n    backend: onnxruntime\n    max_batch: 2\n"
        "other_node:\n  ros__parameters:\n    backend: nope\n"
    )
    assert file_parameters(params) == {"backend": "onnxruntime", "max_batch": 2}
    assert file_parameters(tmp_path / "missing.yaml") == {}


def test_launch_description_builds_where_launch_ros_exists():
    pytest.importorskip("launch_ros", reason="launch_ros is not installable here; checked statically above")
    from launch import LaunchContext
    from launch.actions import OpaqueFunction

    spec = importlib.util.spec_from_file_location("anomaly_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update(
        {
            "params_file": str(REPO_ROOT / "config" / "anomaly.yaml"),
            "checkpoint": "/ckpt",
            "image_topics": "['/front/image_raw']",
            "backend": "",
            "namespace": "/robot",
            "use_sim_time": "true",
            "rviz": "true",
            "rviz_config": str(REPO_ROOT / "config" / "anomaly.rviz"),
        }
    )
    (opaque,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    node, rviz = opaque.execute(context)
    assert (node.node_package, node.node_executable) == ("flowclas_ros", "anomaly_node")
    assert (rviz.node_package, rviz.node_executable) == ("rviz2", "rviz2")
    assert module._overrides(context) == {  # noqa: SLF001
        "checkpoint": "/ckpt",
        "image_topics": ["/front/image_raw"],
        "use_sim_time": True,
    }
