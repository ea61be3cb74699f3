"""launch/anomaly.launch.py: static checks everywhere, a real launch where launch_ros imports.

launch_ros has no wheel here, so the launch file's structure is checked from its syntax tree
and what its arguments mean is tested through flowclas_ros.ros.launch_support, which it calls.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import re
from pathlib import Path

import pytest
import yaml

from flowclas_ros.ros.launch_support import (
    PARAMETER_ARGUMENTS,
    RVIZ_DISPLAYS,
    file_parameters,
    parameter_overrides,
    remapping_list,
    rviz_config_text,
    rviz_topics,
    topic_list,
)
from flowclas_ros.ros.param_validation import parameter_names, validate

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "anomaly.launch.py"
REQUIRED_ARGUMENTS = {
    "params_file",
    "namespace",
    "checkpoint",
    "backend",
    "device",
    "image_topics",
    "camera_names",
    "input_size",
    "threshold",
    "autostart",
    "remappings",
    "use_sim_time",
    "rviz",
    "rviz_config",
    "fixed_frame",
    "dds_profile",
}
DEFAULT_TOPICS = {
    "input": "/image_raw",
    "overlay": "/anomaly_node/camera/overlay",
    "anomaly_points": "/anomaly_node/camera/anomaly_points",
    "anomaly_markers": "/anomaly_node/camera/anomaly_markers",
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


def _declared_arguments() -> dict[str, object]:
    arguments = _assigned("arguments")
    assert isinstance(arguments, ast.List)
    out = {}
    for item in arguments.elts:
        assert isinstance(item, ast.Tuple)
        default = item.elts[1]
        out[ast.literal_eval(item.elts[0])] = (
            ast.literal_eval(default) if isinstance(default, ast.Constant) else "<substitution>"
        )
    return out


def _called(name: str) -> list[ast.Call]:
    return [
        n
        for n in ast.walk(_tree())
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name
    ]


def test_launch_arguments_are_declared_used_and_map_to_node_parameters():
    declared = _declared_arguments()
    assert set(declared) == REQUIRED_ARGUMENTS, set(declared) ^ REQUIRED_ARGUMENTS
    assert set(PARAMETER_ARGUMENTS) <= set(declared), set(PARAMETER_ARGUMENTS) - set(declared)
    unknown = set(PARAMETER_ARGUMENTS.values()) - parameter_names()
    assert not unknown, f"launch file passes parameters the node does not declare: {unknown}"
    # Parameter arguments are empty by default: they override the parameters file only when
    # given (use_sim_time included, so a parameters file can set it).
    assert all(declared[name] == "" for name in PARAMETER_ARGUMENTS)
    source = LAUNCH_FILE.read_text()
    for argument in set(declared) - set(PARAMETER_ARGUMENTS):
        assert f'"{argument}")' in source, argument  # read with _value(context, "...")


def test_launch_starts_a_lifecycle_node_with_remappings_and_cleans_up_rviz_file():
    (node,) = _called("LifecycleNode")
    keywords = {k.arg for k in node.keywords}
    assert {"package", "executable", "name", "namespace", "parameters", "remappings"} <= keywords
    # The generated RViz config is a temp file removed at shutdown (not leaked per launch).
    assert _called("OnShutdown") and "unlink" in LAUNCH_FILE.read_text()
    assert "delete=False" not in LAUNCH_FILE.read_text()


def test_readme_lists_exactly_the_launch_arguments():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Launch file", 1)[1].split("\n#", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    assert len(listed) == len(set(listed)), "an argument is listed twice"
    assert set(listed) == set(_declared_arguments()), set(listed) ^ set(_declared_arguments())


def test_parameter_overrides_type_what_was_given():
    given = {
        "checkpoint": "/ckpt",
        "backend": "",
        "device": "cuda:1",
        "image_topics": "['front/image_raw', '/rear/image_raw/compressed']",
        "camera_names": "front,rear",
        "input_size": "448,448",
        "threshold": "0.75",
        "autostart": "False",
        "use_sim_time": "",
    }
    overrides = parameter_overrides(given)
    assert overrides == {
        "checkpoint": "/ckpt",
        "device": "cuda:1",
        "image_topics": ["front/image_raw", "/rear/image_raw/compressed"],
        "camera_names": ["front", "rear"],
        "input_size": [448, 448],
        "threshold": 0.75,
        "autostart": False,
    }
    for name, value in overrides.items():
        assert validate(name, value) is None, name
    assert parameter_overrides({"use_sim_time": "true"}) == {"use_sim_time": True}
    assert parameter_overrides({"input_size": "[224, 320]"})["input_size"] == [224, 320]
    for bad, fragment in [
        ({"autostart": "maybe"}, "autostart"),
        ({"input_size": "448"}, "input_size"),
        ({"threshold": "high"}, "threshold"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            parameter_overrides(bad)


def test_remapping_list():
    assert remapping_list("") == []
    assert remapping_list("image_raw:=/cam/color/image_raw, /diagnostics:=/r1/diagnostics") == [
        ("image_raw", "/cam/color/image_raw"),
        ("/diagnostics", "/r1/diagnostics"),
    ]
    with pytest.raises(ValueError, match="FROM:=TO"):
        remapping_list("image_raw=/cam")


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
    assert math.isnan(params["threshold"]) and math.isnan(params["image_threshold"])
    assert params["image_topics"] == ["image_raw"]  # relative: follows the namespace


def _shown(text: str) -> tuple[dict[str, str], str]:
    manager = yaml.safe_load(text)["Visualization Manager"]
    topics = {RVIZ_DISPLAYS[d["Name"]]: d["Topic"]["Value"] for d in manager["Displays"]}
    return topics, manager["Global Options"]["Fixed Frame"]


def test_rviz_config_shows_2d_and_3d_outputs_of_the_default_camera():
    template = (REPO_ROOT / "config" / "anomaly.rviz").read_text()
    classes = {d["Class"] for d in yaml.safe_load(template)["Visualization Manager"]["Displays"]}
    assert {"rviz_default_plugins/MarkerArray", "rviz_default_plugins/PointCloud2"} <= classes
    topics, _ = _shown(template)
    assert topics == DEFAULT_TOPICS == rviz_topics("", {})  # the template holds the default names
    assert _shown(rviz_config_text(template, "", {}, "base_link")) == (DEFAULT_TOPICS, "base_link")


def test_rviz_config_follows_namespace_camera_and_remapping():
    template = (REPO_ROOT / "config" / "anomaly.rviz").read_text()
    text = rviz_config_text(
        template, "/robot", {"image_topics": ["/front/color/image_raw/compressed", "/x"]}, "front_optical"
    )
    topics, frame = _shown(text)
    assert frame == "front_optical"
    assert topics["input"] == "/front/color/image_raw"
    assert topics["overlay"] == "/robot/anomaly_node/front_color/overlay"
    assert topics["anomaly_markers"] == "/robot/anomaly_node/front_color/anomaly_markers"
    relative, _ = _shown(rviz_config_text(template, "/r1", {}, "f", [("image_raw", "/cam/image_raw")]))
    assert relative["input"] == "/cam/image_raw"
    assert _shown(rviz_config_text(template, "/r1", {}, "f"))[0]["input"] == "/r1/image_raw"
    named = rviz_config_text(template, "", {"image_topics": ["/a/image"], "camera_names": ["left"]}, "f")
    assert _shown(named)[0]["overlay"] == "/anomaly_node/left/overlay"


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
    from launch_ros.actions import LifecycleNode

    spec = importlib.util.spec_from_file_location("anomaly_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    context = LaunchContext()
    context.launch_configurations.update({name: "" for name in REQUIRED_ARGUMENTS})
    context.launch_configurations.update(
        {
            "params_file": str(REPO_ROOT / "config" / "anomaly.yaml"),
            "checkpoint": "/ckpt",
            "namespace": "/robot",
            "autostart": "false",
            "rviz": "true",
            "rviz_config": str(REPO_ROOT / "config" / "anomaly.rviz"),
            "fixed_frame": "camera_color_optical_frame",
        }
    )
    (opaque,) = [e for e in description.entities if isinstance(e, OpaqueFunction)]
    node, rviz, _cleanup = opaque.execute(context)
    assert isinstance(node, LifecycleNode)
    assert (node.node_package, node.node_executable) == ("flowclas_ros", "anomaly_node")
    assert (rviz.node_package, rviz.node_executable) == ("rviz2", "rviz2")
