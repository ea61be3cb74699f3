"""Static checks that package.xml, CMakeLists.txt, launch/, config/, msg/ and setup.cfg agree."""

from __future__ import annotations

import ast
import configparser
import re
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO_ROOT / "launch" / "anomaly.launch.py"
CMAKE = (REPO_ROOT / "CMakeLists.txt").read_text()
PACKAGE = "flowclas_ros"
EXECUTABLE = "anomaly_node"

# The message contract (docs/ARCHITECTURE.md, ROS interface). Extend compatibly: append fields only.
RESULT_FIELDS = [
    ("std_msgs/Header", "header"),
    ("float32", "image_score"),
    ("float32", "threshold"),
    ("bool", "is_anomalous"),
    ("float32", "anomalous_fraction"),
    ("AnomalyRegion[]", "regions"),
    ("float32", "latency_ms"),
    ("string", "backend"),
]
REGION_FIELDS = [
    ("uint32", "x_offset"),
    ("uint32", "y_offset"),
    ("uint32", "width"),
    ("uint32", "height"),
    ("float32", "peak_score"),
    ("float32", "mean_score"),
    ("uint32", "area"),
]


def cmake_commands(name: str) -> list[str]:
    """Argument strings of every `name(...)` call in CMakeLists.txt (no nested parentheses)."""
    return [" ".join(m.split()) for m in re.findall(rf"^\s*{name}\(([^()]*)\)", CMAKE, flags=re.M | re.I)]


def parse_msg(path: Path) -> list[tuple[str, str, bool]]:
    """(type, name, documented) per field; documented = inline comment or a comment line just above."""
    fields, comment_above = [], False
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line:
            comment_above = False
            continue
        if line.startswith("#"):
            comment_above = True
            continue
        decl, _, comment = line.partition("#")
        ftype, fname = decl.split()[:2]
        fields.append((ftype, fname, bool(comment.strip()) or comment_above))
        comment_above = False
    return fields


def launch_string_constants() -> set[str]:
    tree = ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }


def test_package_xml_is_valid_format3_ament_cmake() -> None:
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(REPO_ROOT / "package.xml"))  # validates like colcon and rosdep do
    assert pkg.name == PACKAGE
    assert pkg.package_format == 3
    assert pkg.get_build_type() == "ament_cmake"
    depends = {d.name for d in pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends}
    required = {"rclpy", "std_msgs", "sensor_msgs", "diagnostic_msgs", "rosidl_default_generators"}
    assert required | {"rosidl_default_runtime", "ament_cmake"} <= depends
    assert "rosidl_interface_packages" in {g.name for g in pkg.member_of_groups}


def test_every_ros_import_of_the_adapter_is_declared() -> None:
    """ROS packages imported under flowclas_ros/ros/ must be dependencies in package.xml (for rosdep)."""
    from catkin_pkg.package import parse_package

    pkg = parse_package(str(REPO_ROOT / "package.xml"))
    declared = {d.name for d in pkg.build_depends + pkg.exec_depends}
    imported: set[str] = set()
    for path in (REPO_ROOT / "flowclas_ros" / "ros").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module.split(".")[0])
    ros_imports = {
        m
        for m in imported
        if m in {"rclpy", "launch", "launch_ros", "cv_bridge"}
        or m.endswith(("_msgs", "_srvs", "_interfaces"))
    }
    assert "rclpy" in ros_imports
    assert not ros_imports - declared, f"imported but not in package.xml: {sorted(ros_imports - declared)}"


@pytest.mark.parametrize(
    ("msg_file", "expected"), [("AnomalyResult.msg", RESULT_FIELDS), ("AnomalyRegion.msg", REGION_FIELDS)]
)
def test_message_fields_match_contract_and_are_documented(msg_file: str, expected: list) -> None:
    fields = parse_msg(REPO_ROOT / "msg" / msg_file)
    assert [(t, n) for t, n, _ in fields][: len(expected)] == expected, "fields may only be appended"
    undocumented = [n for _, n, documented in fields if not documented]
    assert not undocumented, f"{msg_file}: fields without a comment: {undocumented}"


def test_cmake_generates_every_message_and_installs_everything() -> None:
    (generate,) = cmake_commands("rosidl_generate_interfaces")
    listed = set(re.findall(r'"(msg/[^"]+\.msg)"', generate))
    on_disk = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "msg").glob("*.msg")}
    assert listed == on_disk
    installs = cmake_commands("install")
    assert any(
        a.startswith("DIRECTORY launch config ") and "DESTINATION share/${PROJECT_NAME}" in a
        for a in installs
    ), installs
    assert any(a.startswith(f"DIRECTORY {PACKAGE} ") and "${PYTHON_INSTALL_DIR}" in a for a in installs), (
        installs
    )
    assert f"PROGRAMS scripts/{EXECUTABLE} DESTINATION lib/${{PROJECT_NAME}}" in installs


def test_launch_file_refers_to_installed_package_executable_and_config() -> None:
    ast.parse(LAUNCH_FILE.read_text())  # it is valid Python (executing it needs launch_ros)
    constants = launch_string_constants()
    assert PACKAGE in constants and EXECUTABLE in constants
    assert "generate_launch_description" in LAUNCH_FILE.read_text()
    yaml_refs = {c for c in constants if c.endswith(".yaml")}
    assert yaml_refs, "the launch file should load a parameters file from config/"
    for ref in yaml_refs:
        assert (REPO_ROOT / "config" / Path(ref).name).is_file(), (
            f"launch file refers to missing config/{ref}"
        )
    assert (REPO_ROOT / "scripts" / EXECUTABLE).stat().st_mode & 0o111, (
        "scripts/anomaly_node must be executable"
    )


def test_params_file_is_a_ros_parameters_file() -> None:
    config = yaml.safe_load((REPO_ROOT / "config" / "anomaly.yaml").read_text())
    assert isinstance(config, dict) and config
    for node_key, section in config.items():
        assert node_key.endswith(EXECUTABLE), node_key
        assert set(section) == {"ros__parameters"} and isinstance(section["ros__parameters"], dict)


def test_console_scripts_and_ros_executable_share_the_entry_point() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    scripts = dict(
        line.replace(" ", "").split("=", 1)
        for line in cfg["options.entry_points"]["console_scripts"].strip().splitlines()
    )
    assert set(scripts) >= {
        "flowclas-train",
        "flowclas-eval",
        "flowclas-export",
        "flowclas-bag",
        "flowclas-node",
    }
    module, func = scripts["flowclas-node"].split(":")
    node_script = (REPO_ROOT / "scripts" / EXECUTABLE).read_text()
    assert f"from {module} import {func}" in node_script
    assert not [r for r in cfg["options"]["install_requires"].split() if r.startswith(("ros-", "rclpy"))]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert "make test" in commands, commands


def test_readme_parameter_table_lists_exactly_the_node_parameters() -> None:
    from flowclas_ros.ros.params import PARAMETERS  # pure Python, no rclpy

    declared = {spec.name for spec in PARAMETERS}

    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("### Parameters", 1)[1].split("\n#", 1)[0]
    in_readme = re.findall(r"^\| `([A-Za-z0-9_]+)` \|", section, flags=re.M)
    assert len(in_readme) == len(set(in_readme)), "a parameter is listed twice"
    missing, extra = sorted(declared - set(in_readme)), sorted(set(in_readme) - declared)
    assert not missing and not extra, f"README.md parameter table: missing {missing}, not parameters {extra}"
