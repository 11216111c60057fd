"""ROS parameters as a view of :class:`gags_ros.core.config.GagsConfig`.

Each leaf of the config tree becomes one parameter named by its dotted path (``mapping.max_gaussians``)
with a descriptor carrying its help text, unit, range or choices and read-only flag. Values from
parameter files and overrides are validated by the config before the node starts; later changes are
validated the same way and refused with the config's message.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from ..core.config import ConfigError, FieldInfo, GagsConfig, iter_fields, set_value, validate


def _ros_type(info: FieldInfo) -> int:
    if info.type is bool:
        return ParameterType.PARAMETER_BOOL
    if info.type is int:
        return ParameterType.PARAMETER_INTEGER
    if info.type is float:
        return ParameterType.PARAMETER_DOUBLE
    if info.type is str:
        return ParameterType.PARAMETER_STRING
    if info.type is list:
        first = info.value[0] if info.value else ""
        if isinstance(first, str):
            return ParameterType.PARAMETER_STRING_ARRAY
        if isinstance(first, float):
            return ParameterType.PARAMETER_DOUBLE_ARRAY
        return ParameterType.PARAMETER_INTEGER_ARRAY
    raise TypeError(f"{info.name}: no ROS parameter type for {info.type}")


def descriptor(info: FieldInfo) -> ParameterDescriptor:
    """The ROS descriptor of one config leaf (description with unit, range, choices, read-only)."""
    d = ParameterDescriptor(name=info.name, type=_ros_type(info), description=info.description,
                            read_only=info.read_only)
    if info.choices:
        d.additional_constraints = "one of: " + ", ".join(map(str, info.choices))
    # Ranges are attached to scalars only: ROS applies them per element of arrays inconsistently.
    if info.type is int and (info.lo is not None or info.hi is not None):
        d.integer_range = [IntegerRange(from_value=int(info.lo if info.lo is not None else -2**63),
                                        to_value=int(info.hi if info.hi is not None else 2**63 - 1), step=0)]
    elif info.type is float and (info.lo is not None or info.hi is not None):
        d.floating_point_range = [FloatingPointRange(
            from_value=float(info.lo if info.lo is not None else -1e308),
            to_value=float(info.hi if info.hi is not None else 1e308), step=0.0)]
    elif info.type is list and (info.lo is not None or info.hi is not None):
        d.additional_constraints = f"every element in [{info.lo}, {info.hi}]"
    return d


def declare_config(node: Node, cfg: Optional[GagsConfig] = None,
                   on_change: Optional[Callable[[GagsConfig, str], None]] = None) -> GagsConfig:
    """Declare every config leaf on ``node``, read overrides into a validated config and return it.

    Raises :class:`ConfigError` naming the parameter, the value and the allowed range when an
    override is invalid. Later ``set_parameters`` calls are validated by the config (refused with
    its message) and, when accepted, applied to the returned config and reported to ``on_change``.
    """
    cfg = cfg if cfg is not None else GagsConfig()
    infos = list(iter_fields(cfg))
    for info in infos:
        try:
            node.declare_parameter(info.name, info.value, descriptor(info))
        except (InvalidParameterValueException, InvalidParameterTypeException) as e:
            value = node._parameter_overrides.get(info.name)  # noqa: SLF001 - only for the message
            shown = value.value if value is not None else "?"
            rng = (f"one of {list(info.choices)}" if info.choices else f"range [{info.lo}, {info.hi}]")
            raise ConfigError(f"parameter {info.name}={shown!r} rejected: {rng} "
                              f"({type(e).__name__})") from None
    for info in infos:
        value = node.get_parameter(info.name).value
        if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
            value = list(value)
        set_value(cfg, info.name, value)
    validate(cfg)

    def _on_set(params):
        trial = copy.deepcopy(cfg)
        try:
            for p in params:
                value = p.value
                if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
                    value = list(value)
                set_value(trial, p.name, value)
            validate(trial)
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        for p in params:
            set_value(cfg, p.name, getattr_dotted(trial, p.name))
            if on_change is not None:
                on_change(cfg, p.name)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    return cfg


def getattr_dotted(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
