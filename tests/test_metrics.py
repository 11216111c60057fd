"""Scoring helpers of the evaluation on hand-made cases."""

import math

import numpy as np
import pytest

from gags_ros.eval.metrics import (ALL, box_center_distance, box_contains, box_distance, format_table,
                                       instance_boxes, query_mask, score_target, score_view, summarize,
                                       view_ground_truth)


def two_instances():
    ids = np.zeros((60, 80), np.int32)
    ids[5:15, 10:30] = 3  # rows 5..14, cols 10..29
    ids[40:50, 60:70] = 4
    ids[20:30, 40:50] = 9  # another object
    return ids


def test_ground_truth_of_a_query_in_a_view():
    ids = two_instances()
    np.testing.assert_array_equal(instance_boxes(ids, [3, 4]), [[10, 5, 29, 14], [60, 40, 69, 49]])
    assert instance_boxes(ids, [5]).shape == (0, 4)
    assert query_mask(ids, [3, 4]).sum() == 200 + 100
    q = {"level": "part", "ids": [3, 4]}
    m, boxes = view_ground_truth({"part": ids}, q)
    assert m.sum() == 300 and len(boxes) == 2
    assert view_ground_truth({"part": ids}, {"level": "part", "ids": [7]}) is None
    assert view_ground_truth({"part": ids}, {"level": "part", "ids": [4]}, min_pixels=101) is None


def test_localisation_and_segmentation_scores_of_a_view():
    ids = two_instances()
    q = {"level": "whole", "ids": [4]}
    rel = np.zeros((60, 80), np.float32)
    rel[40:50, 60:70] = 1.0  # peak on the target: hit, and the thresholded mask is the target
    s = score_view(rel, {"whole": ids}, q, kernel=5)
    assert s["acc"] == 1.0 and s["iou"] > 0.6
    rel2 = np.zeros((60, 80), np.float32)
    rel2[20:30, 40:50] = 1.0  # peak on the other object: miss, no overlap
    s2 = score_view(rel2, {"whole": ids}, q, kernel=5)
    assert s2 == {"acc": 0.0, "iou": 0.0}
    # A given prediction is scored as it is: half the target.
    pred = np.zeros((60, 80), bool)
    pred[40:50, 60:65] = True
    assert score_view(rel, {"whole": ids}, q, pred_mask=pred, kernel=5)["iou"] == pytest.approx(0.5)
    # The target may be any of the query's instances; invisible targets are not scored.
    assert score_view(rel, {"whole": ids}, {"level": "whole", "ids": [3, 4]}, kernel=5)["acc"] == 1.0
    assert score_view(rel, {"whole": ids}, {"level": "whole", "ids": [11]}) is None


def test_3d_scores():
    lo, hi = [0.0, 0.0, 0.0], [1.0, 2.0, 0.5]
    assert box_contains([0.5, 1.0, 0.25], lo, hi) and box_contains([1.0, 2.0, 0.5], lo, hi)
    assert not box_contains([1.01, 1.0, 0.25], lo, hi) and box_contains([1.01, 1.0, 0.25], lo, hi, tol=0.02)
    assert box_distance([0.5, 1.0, 0.25], lo, hi) == 0.0
    assert box_distance([1.5, 1.0, 0.25], lo, hi) == pytest.approx(0.5)
    assert box_distance([2.0, 3.0, 0.25], lo, hi) == pytest.approx(math.sqrt(2.0))  # corner region
    assert box_center_distance([0.5, 1.0, 0.25], lo, hi) == 0.0
    assert box_center_distance([0.5, 4.0, 0.25], lo, hi) == pytest.approx(3.0)
    q = {"box_min": lo, "box_max": hi}
    assert score_target([1.5, 1.0, 0.25], q) == pytest.approx(
        {"found": 1.0, "hit": 0.0, "center_dist": 1.0, "box_dist": 0.5})
    miss = score_target(None, q)
    assert miss["found"] == 0.0 and miss["hit"] == 0.0 and math.isnan(miss["box_dist"])


def test_summary_means_per_seed_then_spread_over_seeds():
    records = []
    # GaD: whole-level acc 1.0, 0.5, 0.0 on seeds 0, 1, 2 (two records per seed), part level 1.0.
    for seed, acc in enumerate([1.0, 0.5, 0.0]):
        records += [{"variant": "GaD", "level": "whole", "seed": seed, "acc": acc, "iou": 0.4}] * 2
        records.append({"variant": "GaD", "level": "part", "seed": seed, "acc": 1.0, "iou": math.nan})
    records.append({"variant": "Avg", "level": "subpart", "seed": 0, "acc": 0.25, "iou": 0.1})
    s = summarize(records, ["acc", "iou"])
    w = s[("GaD", "whole")]["acc"]
    assert w["mean"] == pytest.approx(0.5) and w["std"] == pytest.approx(0.5) and w["seeds"] == 3 and w["n"] == 6
    # "all" pools the levels within a seed: seed 0 (1 + 1 + 1) / 3, seed 1 (0.5 + 0.5 + 1) / 3, ...
    a = s[("GaD", ALL)]["acc"]
    assert a["mean"] == pytest.approx(np.mean([1.0, 2.0 / 3.0, 1.0 / 3.0]))
    # nan values are not applicable: ignored, and a metric without any value is nan.
    assert s[("GaD", ALL)]["iou"]["mean"] == pytest.approx(0.4) and s[("GaD", ALL)]["iou"]["n"] == 6
    assert math.isnan(s[("GaD", "part")]["iou"]["mean"])
    one = s[("Avg", "subpart")]["acc"]
    assert one["mean"] == 0.25 and one["std"] == 0.0 and one["seeds"] == 1
    table = format_table(s, "acc", variants=["Avg", "GaD"], title="mAcc")
    lines = table.splitlines()
    assert lines[0] == "| mAcc | all | whole | part | subpart |"
    assert lines[2] == "| Avg | 25.0 ± 0.0 | - | - | 25.0 ± 0.0 |"
    assert lines[3].startswith("| GaD | 66.7 ± 33.3 | 50.0 ± 50.0 | 100.0 ± 0.0 | - |")
