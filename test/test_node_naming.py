from __future__ import annotations

import pytest

from flowclas_ros.ros.naming import camera_name, output_topic, resolve_camera_names


@pytest.mark.parametrize(
    ("topic", "name"),
    [
        ("/camera/image_raw", "camera"),
        ("/front/color/image_raw/compressed", "front_color"),
        ("/image", "camera"),
        ("image", "camera"),
        ("/", "camera"),
        ("/left/image_rect_color", "left"),
        ("/robot/arm_cam/image_mono/", "robot_arm_cam"),
        ("/a//b/image_color", "a_b"),
        ("/stereo/left/image_rect", "stereo_left"),
        ("/cam/compressed/image_raw", "cam"),
        ("/cam/raw", "cam_raw"),
    ],
)
def test_camera_name_rule(topic, name):
    assert camera_name(topic) == name


def test_output_topics():
    assert output_topic("front_color", "result") == "~/front_color/result"


def test_resolve_names_derived_override_and_errors():
    topics = ["/front/image_raw", "/rear/image_raw/compressed"]
    assert resolve_camera_names(topics) == ["front", "rear"]
    assert resolve_camera_names(topics, ["a", "b"]) == ["a", "b"]
    with pytest.raises(ValueError, match="one name per topic"):
        resolve_camera_names(topics, ["a"])
    with pytest.raises(ValueError, match="both map to camera name 'cam'"):
        resolve_camera_names(["/cam/image_raw", "/cam/image_raw/compressed"])
    with pytest.raises(ValueError, match="not a valid ROS name token"):
        resolve_camera_names(["/0/image"])
    with pytest.raises(ValueError, match="not a valid ROS name token"):
        resolve_camera_names(["/x"], ["bad-name"])
