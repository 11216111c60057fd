"""The typed config is the single source: the YAML and the ROS parameters are views of it."""

import copy
from pathlib import Path

import pytest

from gags_ros.core import config as C

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_valid():
    C.validate(C.GagsConfig())


def test_yaml_file_is_the_generated_view():
    text = (ROOT / "config" / "mapping.yaml").read_text()
    assert text == C.ros_params_yaml(), (
        "config/mapping.yaml is out of date: run python -m gags_ros.core.config --write config/mapping.yaml")


def test_yaml_round_trip_and_every_field_documented(tmp_path):
    cfg = C.load_yaml(ROOT / "config" / "mapping.yaml")
    assert C.flat_dict(cfg) == C.flat_dict(C.GagsConfig())
    for info in C.iter_fields(cfg):
        assert info.help, f"{info.name} has no help text"
        if isinstance(info.value, (int, float)) and not isinstance(info.value, bool):
            assert info.lo is not None and info.hi is not None, f"{info.name} has no range"
    changed = C.GagsConfig()
    C.set_value(changed, "mapping.max_gaussians", 2000)
    p = tmp_path / "p.yaml"
    p.write_text(C.ros_params_yaml(changed))
    assert C.load_yaml(p).mapping.max_gaussians == 2000


@pytest.mark.parametrize("name,value,needle", [
    ("mapping.max_gaussians", -5, "out of range [1000, 50000000]"),
    ("query.threshold", 1.5, "out of range [0.0, 1.0]"),
    ("mapping.strategy", "greedy", "must be one of ['default', 'mcmc']"),
    ("ros.tf_timeout", "soon", "expected float"),
    ("mapping.background", [0.0, 2.0, 0.0], "out of range"),
    ("query.temperature", float("nan"), "must be finite"),
])
def test_bad_values_name_parameter_value_and_range(name, value, needle):
    cfg = C.GagsConfig()
    before = C.flat_dict(cfg)
    with pytest.raises(C.ConfigError) as e:
        C.set_value(cfg, name, value)
    msg = str(e.value)
    assert name in msg and repr(value) in msg and needle in msg
    assert C.flat_dict(cfg) == before, "a rejected value must leave the config unchanged"


def test_cross_field_rule_and_unknown_names(tmp_path):
    cfg = C.GagsConfig()
    with pytest.raises(C.ConfigError, match="query.drop_neighbours"):
        C.set_value(cfg, "query.drop_neighbours", 50)
    with pytest.raises(C.ConfigError, match="mapping.nonsense: unknown parameter"):
        C.set_value(cfg, "mapping.nonsense", 1)
    p = tmp_path / "bad.yaml"
    p.write_text("/**:\n  ros__parameters:\n    query:\n      threshold: 3.0\n")
    with pytest.raises(C.ConfigError, match=r"bad.yaml: query.threshold=3.0: out of range"):
        C.load_yaml(p)


def test_int_fields_accept_integral_floats_only():
    cfg = C.GagsConfig()
    C.set_value(cfg, "mapping.window_recent", 4.0)
    assert cfg.mapping.window_recent == 4 and isinstance(cfg.mapping.window_recent, int)
    with pytest.raises(C.ConfigError):
        C.set_value(cfg, "mapping.window_recent", 4.5)
    with pytest.raises(C.ConfigError):
        C.set_value(cfg, "language.enabled", 1)


@pytest.mark.ros
def test_ros_parameters_agree_with_config(rclpy_context):
    from rclpy.node import Node

    from gags_ros.ros.params import declare_config

    node = Node("cfg_probe", context=rclpy_context)
    try:
        cfg = declare_config(node)
        infos = list(C.iter_fields(C.GagsConfig()))
        names = {n for n in node._parameters if n not in ("use_sim_time", "start_type_description_service")}  # noqa: SLF001
        assert names == {i.name for i in infos}
        for info in infos:
            p = node.get_parameter(info.name)
            value = list(p.value) if isinstance(info.value, list) else p.value
            assert value == info.value, info.name
            d = node.describe_parameters([info.name])[0]
            assert d.description == info.description and d.read_only == info.read_only
            if info.type is float and info.lo is not None:
                assert (d.floating_point_range[0].from_value, d.floating_point_range[0].to_value) == (info.lo, info.hi)
            if info.type is int and info.lo is not None:
                assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == (info.lo, info.hi)
        # A runtime change is validated by the config and refused with its message.
        from rclpy.parameter import Parameter

        res = node.set_parameters([Parameter("query.drop_neighbours", value=99)])[0]
        assert not res.successful and "query.drop_neighbours" in res.reason
        res = node.set_parameters([Parameter("query.threshold", value=0.3)])[0]
        assert res.successful and cfg.query.threshold == 0.3
        before = copy.deepcopy(C.flat_dict(cfg))
        res = node.set_parameters([Parameter("ros.status_period", value=-1.0)])[0]
        assert not res.successful and C.flat_dict(cfg) == before
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_refusals_say_why(rclpy_context):
    """With ExplainedParameters (the mapping node's), a change is checked by the config before rclpy's
    own checks: the refusal is the config's message, and a read-only parameter says why it is one."""
    from rclpy.node import Node
    from rclpy.parameter import Parameter

    from gags_ros.ros.params import ExplainedParameters, declare_config

    class Probe(ExplainedParameters, Node):
        pass

    node = Probe("cfg_probe_why", context=rclpy_context)
    try:
        cfg = declare_config(node)
        infos = list(C.iter_fields(C.GagsConfig()))
        assert all(i.read_only_reason for i in infos if i.read_only)
        for name, value, reason in [("query.threshold", 2.5, "query.threshold=2.5: out of range [0.0, 1.0]"),
                                    ("device", "cuda", "device is read-only on a running node: it names a file"),
                                    ("ros.qos_depth", 50, "ros.qos_depth is read-only on a running node: topics, QoS"),
                                    ("language.feature_dim", 32, "language.feature_dim is read-only on a running "
                                                                 "node: the models, map layout or memory")]:
            (res,) = node.set_parameters([Parameter(name, value=value)])
            assert not res.successful and res.reason.startswith(reason), res.reason
        res = node.set_parameters_atomically([Parameter("query.keep_neighbours", value=5),
                                              Parameter("query.drop_neighbours", value=4)])
        assert res.successful and (cfg.query.keep_neighbours, cfg.query.drop_neighbours) == (5, 4)
        assert node.set_parameters([Parameter("use_sim_time", value=False)])[0].successful   # not ours: rclpy's
    finally:
        node.destroy_node()
