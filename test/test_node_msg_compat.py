"""AnomalyResult / AnomalyRegion evolve by appending fields: bags recorded with the old layout stay readable.

A bag written with the layout before ``image_threshold`` was appended (its definitions are stored
in the bag, as ros2 bag does) is read back with rosbags' AnyReader, which deserialises with the
bag's own definitions; the common fields keep their meaning. The .msg files also keep every
comment on its own line (``ros2 interface show`` renders multi-line trailing comments as bare ``#``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

REPO_ROOT = Path(__file__).resolve().parents[1]
OLD_RESULT = """std_msgs/Header header
float32 image_score
float32 threshold
bool is_anomalous
float32 anomalous_fraction
AnomalyRegion[] regions
float32 latency_ms
string backend
"""
OLD_REGION = """uint32 x_offset
uint32 y_offset
uint32 width
uint32 height
float32 peak_score
float32 mean_score
uint32 area
bool has_3d
geometry_msgs/Point centroid
geometry_msgs/Point box_center
geometry_msgs/Vector3 extent
uint32 num_points
"""
RESULT, REGION = "flowclas_ros/msg/AnomalyResult", "flowclas_ros/msg/AnomalyRegion"


def _fields(text: str) -> list[str]:
    return [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]


def test_new_layout_only_appends_to_the_old_one():
    for name, old in (("AnomalyResult", OLD_RESULT), ("AnomalyRegion", OLD_REGION)):
        new = _fields((REPO_ROOT / "msg" / f"{name}.msg").read_text())
        assert new[: len(_fields(old))] == _fields(old), name
    appended = _fields((REPO_ROOT / "msg" / "AnomalyResult.msg").read_text())[len(_fields(OLD_RESULT)) :]
    assert appended == ["float32 image_threshold", "float32 model_ms"]


def test_msg_comments_are_on_their_own_lines():
    for path in (REPO_ROOT / "msg").glob("*.msg"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.match(r"^\s+#", line), f"{path.name}:{number}: indented continuation comment"
            assert "#" not in line or line.startswith("#"), f"{path.name}:{number}: trailing comment"


def test_old_layout_bag_reads_back(tmp_path):
    store = get_typestore(Stores.ROS2_JAZZY)
    types = get_types_from_msg(OLD_REGION, REGION)
    types.update(
        get_types_from_msg(OLD_RESULT.replace("AnomalyRegion[]", "flowclas_ros/AnomalyRegion[]"), RESULT)
    )
    store.register(types)
    result_cls, region_cls = store.types[RESULT], store.types[REGION]
    header_cls, time_cls = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    point, vector = store.types["geometry_msgs/msg/Point"], store.types["geometry_msgs/msg/Vector3"]
    region = region_cls(
        1, 2, 3, 4, 0.9, 0.7, 6, True, point(0.0, 0.0, 1.0), point(0.0, 0.0, 1.0), vector(1, 1, 1), 5
    )
    msg = result_cls(
        header_cls(time_cls(12, 34), "cam_optical"), 0.8, 0.5, True, 0.25, [region], 12.5, "torch"
    )
    bag = tmp_path / "old_bag"
    with Writer(bag, version=9) as writer:
        conn = writer.add_connection("/anomaly_node/camera/result", RESULT, typestore=store)
        writer.write(conn, 12_000_000_034, store.serialize_cdr(msg, RESULT))
    with AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        ((conn, stamp, raw),) = list(reader.messages())
        read = reader.deserialize(raw, conn.msgtype)
    assert stamp == 12_000_000_034 and read.header.frame_id == "cam_optical"
    assert read.image_score == pytest.approx(0.8) and read.threshold == 0.5
    assert read.is_anomalous and read.backend == "torch" and read.latency_ms == 12.5
    assert read.regions[0].area == 6 and read.regions[0].num_points == 5
    assert not hasattr(read, "image_threshold")  # old bags simply lack the appended field


def _interface_show(name: str, show_comments: bool = True, indent: int = 0) -> list[str]:
    """What the Jazzy ``ros2 interface show flowclas_ros/msg/NAME`` prints: each line of the .msg parsed
    on its own by rosidl_adapter; a nested type's definition follows its field, one tab deeper, without
    its comments and blank lines (ros2interface/verb/show.py)."""
    from rosidl_adapter.parser import parse_message_string

    out = []
    for line in (REPO_ROOT / "msg" / f"{name}.msg").read_text().splitlines():
        spec = parse_message_string("flowclas_ros", name, line.rstrip())
        is_comment = bool(spec.annotations.get("comment"))
        if not show_comments and (not line.strip() or is_comment):
            continue
        out.append("\t" * indent + line.rstrip() if line.strip() else "")
        nested = str(spec.fields[0].type).split("[")[0] if spec.fields else ""
        if nested.startswith("flowclas_ros/"):
            out += _interface_show(nested.split("/")[1], False, indent + 1)
    return out


def test_interface_show_prints_no_bare_comment_markers():
    shown = _interface_show("AnomalyResult")
    bare = [number for number, line in enumerate(shown, 1) if line.strip() == "#"]
    assert not bare, f"bare '#' lines at {bare}:\n" + "\n".join(shown)
    nested = [line for line in shown if line.startswith("\t")]
    assert [line.strip() for line in nested] == _fields((REPO_ROOT / "msg" / "AnomalyRegion.msg").read_text())
    for path in (REPO_ROOT / "msg").glob("*.msg"):  # every comment line says something
        for number, line in enumerate(path.read_text().splitlines(), 1):
            assert not re.fullmatch(r"#\s*", line), f"{path.name}:{number}: empty comment line"
