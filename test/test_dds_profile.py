"""The node's Fast DDS profile: chosen before rclpy.init, the user's own profile wins, bad path = one line."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from flowclas_ros.ros.dds_profile import FASTDDS_ENVS, PACKAGED_PROFILE, PROFILE_ENV, apply_dds_profile

NS = "{http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles}"


def test_packaged_profile_is_valid_xml_with_the_two_settings():
    root = ET.parse(PACKAGED_PROFILE).getroot()
    segment = root.find(f"{NS}transport_descriptors/{NS}transport_descriptor/{NS}segment_size")
    assert int(segment.text) >= 16 * 2**20  # 1080p float32 score map + mask + overlay, two cameras
    period = root.find(f"{NS}data_writer/{NS}times/{NS}heartbeatPeriod")
    assert (int(period.find(f"{NS}sec").text), int(period.find(f"{NS}nanosec").text)) == (0, 100_000_000)
    participant = root.find(f"{NS}participant")
    assert participant.get("is_default_profile") == "true"
    transports = [t.text for t in participant.findall(f"{NS}rtps/{NS}userTransports/{NS}transport_id")]
    assert len(transports) == 2  # SHM and UDPv4, as Fast DDS's builtin transports


def test_default_applies_packaged_profile_for_both_fastdds_generations():
    env: dict[str, str] = {}
    note = apply_dds_profile(env)
    assert all(env[name] == str(PACKAGED_PROFILE) for name in FASTDDS_ENVS)
    assert str(PACKAGED_PROFILE) in note and f"{PROFILE_ENV}=none" in note


def test_users_profile_wins_and_none_or_other_rmw_applies_nothing(tmp_path):
    mine = tmp_path / "mine.xml"
    env = {"FASTRTPS_DEFAULT_PROFILES_FILE": str(mine)}
    assert "not applied" in apply_dds_profile(env)
    assert env == {"FASTRTPS_DEFAULT_PROFILES_FILE": str(mine)}
    env = {PROFILE_ENV: "none"}
    assert "none" in apply_dds_profile(env) and set(env) == {PROFILE_ENV}
    env = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert apply_dds_profile(env) is None and set(env) == {"RMW_IMPLEMENTATION"}
    mine.write_text("<profiles/>")
    env = {PROFILE_ENV: str(mine), "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp"}
    apply_dds_profile(env)
    assert env["FASTDDS_DEFAULT_PROFILES_FILE"] == str(mine)


def test_missing_profile_file_is_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=f"^{PROFILE_ENV}=.*no such file"):
        apply_dds_profile({PROFILE_ENV: str(tmp_path / "absent.xml")})


def test_node_exits_2_with_one_line_on_a_missing_profile(tmp_path):
    env = {**__import__("os").environ, PROFILE_ENV: str(tmp_path / "absent.xml")}
    for name in FASTDDS_ENVS:
        env.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "flowclas_ros.ros.node"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    expected = f"{PROFILE_ENV}={tmp_path / 'absent.xml'}: no such file (unset it, or set it to 'none')"
    assert lines == [f"flowclas-node: {expected}"]
