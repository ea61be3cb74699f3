"""Input QoS and the "no frame arrived" diagnosis (QoS mismatch, wrong topic, wrong type)."""

from __future__ import annotations

import difflib

from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

# Results are small and consumed by planners: reliable, a short history.
RESULT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Reliable publishers also reach best-effort subscribers (and RViz's reliable default);
# depth 1 keeps only the newest image for a slow subscriber.
IMAGE_OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE
)


def input_qos(reliability: str, depth: int) -> QoSProfile:
    """Subscription QoS: sensor-data style (``best_effort``, depth 1) by default.

    Args:
        reliability: ``best_effort`` or ``reliable``.
        depth: History depth (>= 1).
    """
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=policy,
        durability=DurabilityPolicy.VOLATILE,
    )


def _policy_name(policy: object) -> str:
    return getattr(policy, "name", str(policy)).lower()


def silence_causes(node: Node, topic: str, expected_type: str, sub_qos: QoSProfile) -> list[str]:
    """Likely reasons why a subscription on ``topic`` has received nothing, most specific first.

    Checks the publishers on the topic (none; wrong message type; QoS that cannot match ours:
    a reliable subscription never receives from a best-effort publisher, a transient-local one
    never from a volatile publisher) and lists image topics with similar names.
    """
    resolved = node.resolve_topic_name(topic)
    causes = []
    publishers = node.get_publishers_info_by_topic(resolved)
    if not publishers:
        causes.append(f"no publisher on {resolved}")
    for info in publishers:
        who = f"publisher {info.node_namespace.rstrip('/')}/{info.node_name}"
        if info.topic_type != expected_type:
            causes.append(
                f"{who} sends {info.topic_type} but we subscribe {expected_type} "
                "(check the 'compressed' parameter)"
            )
            continue
        pub_qos = info.qos_profile
        if (
            sub_qos.reliability == ReliabilityPolicy.RELIABLE
            and pub_qos.reliability == ReliabilityPolicy.BEST_EFFORT
        ):
            causes.append(
                f"QoS mismatch: {who} is best_effort but this subscription is reliable "
                "(set qos_reliability: best_effort)"
            )
        if (
            sub_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
            and pub_qos.durability == DurabilityPolicy.VOLATILE
        ):
            causes.append(f"QoS mismatch: {who} is volatile but this subscription is transient_local")
    if publishers and not causes:
        qos_text = ", ".join(
            f"{_policy_name(p.qos_profile.reliability)}/{_policy_name(p.qos_profile.durability)}"
            for p in publishers
        )
        causes.append(f"{len(publishers)} compatible publisher(s) ({qos_text}) but nothing published yet")
    if not publishers:
        own_prefix = node.get_fully_qualified_name() + "/"  # our overlays are images too
        image_topics = [
            name
            for name, types in node.get_topic_names_and_types()
            if any(t in IMAGE_TYPES for t in types)
            and not name.startswith(own_prefix)
            and node.count_publishers(name) > 0  # topics that only have subscribers are no alternative
        ]
        similar = difflib.get_close_matches(resolved, image_topics, n=5, cutoff=0.4)
        others = similar or sorted(image_topics)[:5]
        if others:
            label = "similar image topics" if similar else "image topics that exist"
            causes.append(f"wrong topic name? {label}: {', '.join(others)}")
        else:
            causes.append(
                "no image topic exists at all (camera driver not running, or another ROS_DOMAIN_ID)"
            )
    return causes
