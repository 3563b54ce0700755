"""CenterNet targets: boxes from instance masks, heatmaps, loss and decoding back to boxes."""

from __future__ import annotations

import numpy as np
import torch

from maxa.evaluate.metrics import BoxAP
from maxa.extract.datasets import build_dataset
from maxa.probe import centernet


def test_boxes_from_hand_made_masks() -> None:
    inst = np.zeros((6, 8), np.int32)
    inst[1:3, 2:5] = 7
    inst[4, 0] = 2
    inst[3:6, 6:8] = 40
    boxes, areas = centernet.boxes_from_instances(inst)
    assert boxes.tolist() == [[0, 4, 1, 5], [2, 1, 5, 3], [6, 3, 8, 6]]  # ids 2, 7, 40
    assert areas.tolist() == [1, 6, 6]
    empty, no_area = centernet.boxes_from_instances(np.zeros((3, 3), np.int32))
    assert empty.shape == (0, 4) and no_area.shape == (0,)


def test_boxes_match_the_synthetic_datasets_own_boxes() -> None:
    sample = build_dataset("synthetic", split="train", num_images=4, image_size=64, max_objects=5)[3]
    boxes, _ = centernet.boxes_from_instances(sample.targets["instances"])
    np.testing.assert_array_equal(boxes, sample.targets["boxes"])


def _instances() -> np.ndarray:
    inst = np.zeros((2, 32, 32), np.int32)
    inst[0, 2:12, 3:20] = 1
    inst[0, 18:30, 20:31] = 2
    inst[1, 5:25, 5:15] = 4
    return inst


def test_encoded_heatmap_peaks_at_centres_with_sizes() -> None:
    encoded = centernet.encode(_instances())
    assert encoded.shape == (2, 3, 32, 32)
    heat = encoded[:, 0]
    assert heat.max() == 1.0 and heat.min() >= 0.0
    assert sorted(zip(*np.nonzero(heat[0] == 1.0), strict=True)) == [(7, 11), (24, 25)]
    assert encoded[0, 1, 7, 11] == 17 / 32 and encoded[0, 2, 7, 11] == 10 / 32
    assert np.count_nonzero(encoded[:, 1]) == 3  # sizes only at the centre pixels
    assert heat[0, 7, 10] < 1.0 and heat[0, 7, 10] > 0.5  # Gaussian falls off around the peak


def test_decoding_the_target_gives_the_ground_truth_boxes() -> None:
    inst = _instances()
    encoded = torch.from_numpy(centernet.encode(inst))
    heat = encoded[:, :1].clamp(1e-6, 1 - 1e-6)
    perfect = torch.cat([torch.log(heat / (1 - heat)), encoded[:, 1:]], dim=1)
    perfect[:, 1:] = torch.from_numpy(_dense_sizes(inst))  # sizes everywhere, as a trained head gives
    ap = BoxAP((32, 32))
    for (boxes, scores), image in zip(centernet.decode(perfect, 100), inst, strict=True):
        gt, areas = centernet.boxes_from_instances(image)
        assert len(boxes) >= len(gt)
        # the best-scored boxes are the ground truth within the half-pixel centre quantization
        best = boxes[: len(gt)].numpy()
        assert np.abs(np.sort(best, axis=0) - np.sort(gt, axis=0)).max() <= 0.5
        ap.update_image(gt, boxes.numpy(), scores.numpy(), areas)
    assert ap.compute()["ap50"] == 1.0


def _dense_sizes(inst: np.ndarray) -> np.ndarray:
    """Each object's box size on all its pixels (boxes come in increasing id order)."""
    out = np.zeros((inst.shape[0], 2, *inst.shape[1:]), np.float32)
    for i, image in enumerate(inst):
        boxes, _ = centernet.boxes_from_instances(image)
        for obj, (x0, y0, x1, y1) in zip(np.unique(image[image > 0]), boxes, strict=True):
            out[i, 0][image == obj] = (x1 - x0) / image.shape[1]
            out[i, 1][image == obj] = (y1 - y0) / image.shape[0]
    return out


def test_loss_prefers_the_right_output() -> None:
    encoded = torch.from_numpy(centernet.encode(_instances()))
    heat = encoded[:, :1].clamp(1e-4, 1 - 1e-4)
    right = torch.cat([torch.log(heat / (1 - heat)), encoded[:, 1:]], dim=1)
    wrong_sizes = right.clone()
    wrong_sizes[:, 1:] += 0.2
    constant = torch.zeros_like(right)
    assert (
        centernet.loss(right, encoded)
        < centernet.loss(wrong_sizes, encoded)
        < centernet.loss(constant, encoded)
    )
