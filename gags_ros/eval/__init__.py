"""Evaluation: the LERF-OVS 2D protocol as LangSplat's evaluation code scores it (:mod:`.lerf_ovs`),
the 3D Gaussian-selection protocol (:mod:`.selection`), metrics and aggregation (:mod:`.metrics`),
the evaluation command (:mod:`.evaluate`), its stages (:mod:`.stages`), pictures
(:mod:`.pictures`) and the GaD probe (:mod:`.gad_probe`). See docs/evaluation.md.

The top layer: it imports ``gags_ros.core`` and ``gags_ros.sim``; neither imports it (the
contracts in ``.importlinter`` enforce it).
"""
