"""Declares :data:`flowclas_ros.ros.params.PARAMETERS` on an rclpy node, with descriptors."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType
from rclpy.node import Node
from rclpy.parameter import Parameter

from flowclas_ros.ros.params import PARAMETERS, ParamSpec

_TYPES = {
    "bool": (ParameterType.PARAMETER_BOOL, Parameter.Type.BOOL),
    "integer": (ParameterType.PARAMETER_INTEGER, Parameter.Type.INTEGER),
    "double": (ParameterType.PARAMETER_DOUBLE, Parameter.Type.DOUBLE),
    "string": (ParameterType.PARAMETER_STRING, Parameter.Type.STRING),
    "bool_array": (ParameterType.PARAMETER_BOOL_ARRAY, Parameter.Type.BOOL_ARRAY),
    "integer_array": (ParameterType.PARAMETER_INTEGER_ARRAY, Parameter.Type.INTEGER_ARRAY),
    "double_array": (ParameterType.PARAMETER_DOUBLE_ARRAY, Parameter.Type.DOUBLE_ARRAY),
    "string_array": (ParameterType.PARAMETER_STRING_ARRAY, Parameter.Type.STRING_ARRAY),
}


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: type, description, range and constraints."""
    ros_type, _ = _TYPES[spec.type]
    constraints = []
    if spec.choices:
        constraints.append(f"one of: {', '.join(spec.choices)}")
    constraints.append(
        "changeable at runtime" if spec.runtime else "read at configure (set while unconfigured)"
    )
    desc = ParameterDescriptor(
        name=spec.name,
        type=ros_type,
        description=spec.description,
        additional_constraints="; ".join(constraints),
    )
    # Scalar ranges only: ROS applies them to arrays element-wise in some versions, not others.
    if spec.low is not None and spec.high is not None:
        if spec.type == "integer":
            desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
        elif spec.type == "double":
            desc.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    return desc


def declare_parameters(node: Node) -> dict[str, Any]:
    """Declares every parameter (overrides from ``--params-file``/``-p`` apply) and returns the values.

    Array parameters whose default is empty are declared with their type only; their value is
    None until set.
    """
    values = {}
    for spec in PARAMETERS:
        default = _TYPES[spec.type][1] if spec.default is None else spec.default
        values[spec.name] = node.declare_parameter(spec.name, default, descriptor(spec)).value
    return values
