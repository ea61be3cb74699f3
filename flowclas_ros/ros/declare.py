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
    if spec.allowed():
        constraints.append(f"one of: {', '.join(spec.allowed())}")
    constraints.append(
        "changeable at runtime" if spec.runtime else "read at configure (set while unconfigured)"
    )
    desc = ParameterDescriptor(
        name=spec.name,
        type=ros_type,
        description=spec.description,
        additional_constraints="; ".join(constraints),
        dynamic_typing=spec.dynamic,
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

    Every parameter ends up with a typed value, so ``ros2 param dump`` / ``get`` list them all:
    rclpy answers a GetParameters request naming one unset parameter with no values at all.
    rclpy cannot declare a typed empty list directly (``[]`` has no element type; it is
    guessed as a byte array), so an empty-array default is declared by type, then set to a
    typed ``[]`` unless a parameters file or ``-p`` already gave it a value.
    """
    values = {}
    for spec in PARAMETERS:
        param_type = _TYPES[spec.type][1]
        empty_array = spec.type.endswith("_array") and not spec.default
        default = param_type if empty_array else spec.default
        value = node.declare_parameter(spec.name, default, descriptor(spec)).value
        if value is None:
            node.set_parameters([Parameter(spec.name, param_type, [])])
            value = []
        values[spec.name] = value
    return values
