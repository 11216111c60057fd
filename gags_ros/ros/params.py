"""ROS parameters as a view of :class:`gags_ros.core.config.GagsConfig`.

Each leaf of the config tree becomes one parameter named by its dotted path (``mapping.max_gaussians``)
with a descriptor carrying its help text, unit, range or choices and read-only flag. Values from
parameter files and overrides are validated by the config before the node starts; later changes
(``ros2 param set``) are validated the same way and refused with the config's message; a read-only
parameter is refused with the reason the config gives for it (:class:`ExplainedParameters`).
Accepted changes go into the node's config object at once: the worker reads it at its next use.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, List, Optional

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node

from ..core.config import ConfigError, FieldInfo, GagsConfig, iter_fields, set_value, set_values, validate


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


def read_only_message(name: str, reason: str) -> str:
    """The refusal of a run-time change of the read-only parameter ``name``."""
    return (f"{name} is read-only on a running node: {reason}. Set it at start: in the parameter file "
            f"(params_file:=...) or with --ros-args -p {name}:=VALUE")


class ExplainedParameters:
    """Mixin for a :class:`rclpy.node.Node` subclass (listed before Node) whose parameters come from
    :func:`declare_config`: a change is checked against the typed config before rclpy's own checks,
    so a refusal carries the config's reason (the parameter, the value and its range with unit; for a
    read-only parameter, why it is read-only) instead of rclpy's generic one. ``ros2 param set``
    reaches :meth:`set_parameters_atomically` through the node's parameter services."""

    _parameter_check: Optional[Callable[[List], str]] = None   # set by declare_config

    def set_parameters_atomically(self, parameter_list):
        why = self._parameter_check(parameter_list) if self._parameter_check is not None else ""
        if why:
            return SetParametersResult(successful=False, reason=why)
        return super().set_parameters_atomically(parameter_list)

    def set_parameters(self, parameter_list):
        return [self.set_parameters_atomically([p]) for p in parameter_list]


def declare_config(node: Node, cfg: Optional[GagsConfig] = None,
                   on_change: Optional[Callable[[GagsConfig, str], None]] = None) -> GagsConfig:
    """Declare every config leaf on ``node``, read overrides into a validated config and return it.

    Raises :class:`ConfigError` naming the parameter, the value and the allowed range when an
    override is invalid. Later ``set_parameters`` calls are validated by the config (refused with
    its message) and, when accepted, applied to the returned config and reported to ``on_change``
    (on the thread that set them: the executor's, for ``ros2 param set``).
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

    names = {i.name for i in infos}
    read_only: Dict[str, str] = {i.name: i.read_only_reason for i in infos if i.read_only}

    def check(params) -> str:
        """Why ``params`` cannot be set now ("" when they can)."""
        for p in params:
            if p.name in read_only:
                return read_only_message(p.name, read_only[p.name])
        try:
            _trial(params)
        except ConfigError as e:
            return str(e)
        return ""

    def _trial(params) -> GagsConfig:
        trial = copy.deepcopy(cfg)
        values = {}
        for p in params:
            if p.name not in names:     # not ours (e.g. use_sim_time): rclpy decides
                continue
            value = p.value
            if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
                value = list(value)
            values[p.name] = value
        set_values(trial, values)     # all at once: an atomic set may move related values together
        return validate(trial)

    def _on_set(params):
        try:
            trial = _trial(params)
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        ours = [p.name for p in params if p.name in names]
        set_values(cfg, {name: getattr_dotted(trial, name) for name in ours})
        if on_change is not None:
            for name in ours:
                on_change(cfg, name)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(_on_set)
    node._parameter_check = check
    return cfg


def getattr_dotted(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj
