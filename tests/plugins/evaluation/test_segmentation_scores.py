"""Segmentation scores per image against values worked out by hand on tiny masks (the comments give the counts)."""

from __future__ import annotations

import pytest
import torch
from b2s_bench_plugins.evaluation import segmentation_scores as seg


def t(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.uint8)


#: binary, 4×4: the truth's foreground is the 2×2 centre; the prediction moves one pixel of it right
TRUTH_A = t([[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
PRED_A = t([[0, 0, 0, 0], [0, 1, 1, 1], [0, 1, 0, 0], [0, 0, 0, 0]])
#: every pixel ignored: no class is present, the image scores 1
TRUTH_IGNORED = torch.full((4, 4), 255, dtype=torch.uint8)
#: all background in both: foreground absent from both is left out of the class mean
ALL_BG = torch.zeros(4, 4, dtype=torch.uint8)
#: all background in the truth, 2 foreground pixels predicted
PRED_D = t([[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]])


def scores(pred: list[torch.Tensor], truth: list[torch.Tensor], classes: int = 2) -> dict[str, list[float]]:
    cm = seg.confusion(torch.stack(pred), torch.stack(truth), classes)
    return {k: v.tolist() for k, v in seg.image_scores(cm).items()}


def test_binary_image_by_hand() -> None:
    # foreground: TP 3, FP 1 (1,3), FN 1 (2,2): IoU 3/5, accuracy 3/4, Dice 6/8
    # background: 12 truth, 12 predicted, TP 11: IoU 11/13, accuracy 11/12
    s = scores([PRED_A], [TRUTH_A])
    assert s["iou"] == pytest.approx([(3 / 5 + 11 / 13) / 2])
    assert s["acc"] == pytest.approx([(3 / 4 + 11 / 12) / 2])
    assert s["dice"] == pytest.approx([3 / 4])


def test_absent_classes_and_ignored_images() -> None:
    s = scores([PRED_A, ALL_BG, PRED_D], [TRUTH_IGNORED, ALL_BG, ALL_BG])
    # image 0: every pixel ignored; image 1: foreground absent from both, background perfect
    assert s["iou"][:2] == [1.0, 1.0] and s["acc"][:2] == [1.0, 1.0] and s["dice"][:2] == [1.0, 1.0]
    # image 2: background IoU 14/16, foreground only predicted: IoU 0, counted; accuracy only over the
    # truth's class (14/16); Dice of the foreground 0
    assert s["iou"][2] == pytest.approx((14 / 16 + 0) / 2)
    assert s["acc"][2] == pytest.approx(14 / 16)
    assert s["dice"][2] == 0.0


def test_ignored_pixels_are_not_scored() -> None:
    truth = TRUTH_A.clone()
    truth[1, 3] = 255  # the false positive's pixel
    truth[2, 2] = 255  # the false negative's pixel
    s = scores([PRED_A], [truth])
    assert s["iou"] == [1.0] and s["acc"] == [1.0] and s["dice"] == [1.0]


def test_multiclass_image_by_hand() -> None:
    truth = t([[0, 1], [2, 2]])
    pred = t([[0, 2], [2, 1]])
    # class 0: TP 1 of 1 -> IoU 1, acc 1, Dice 1; class 1: TP 0, truth 1, pred 1 -> 0, 0, 0;
    # class 2: TP 1, truth 2, pred 2 -> IoU 1/3, acc 1/2, Dice 2/4
    s = scores([pred], [truth], classes=3)
    assert s["iou"] == pytest.approx([(1 + 0 + 1 / 3) / 3])
    assert s["acc"] == pytest.approx([(1 + 0 + 1 / 2) / 3])
    assert s["dice"] == pytest.approx([(1 + 0 + 1 / 2) / 3])
    # a class absent from both (here 3 of 4) is excluded: the same scores with a 4th class
    assert scores([pred], [truth], classes=4) == s


def test_confusion_chunks_give_the_same_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 3, (7, 5, 6), generator=gen, dtype=torch.uint8)
    truth = torch.randint(0, 3, (7, 5, 6), generator=gen, dtype=torch.uint8)
    whole = seg.confusion(pred, truth, 3)
    monkeypatch.setattr(seg, "PIXELS_PER_CHUNK", 40)  # one image (30 pixels) a chunk
    assert torch.equal(seg.confusion(pred, truth, 3), whole)
    for i in range(7):  # each image's matrix, counted pixel by pixel
        for r, c in zip(truth[i].flatten().tolist(), pred[i].flatten().tolist(), strict=True):
            whole[i, r, c] -= 1
    assert int(whole.abs().sum()) == 0


def test_bad_masks_are_refused() -> None:
    with pytest.raises(ValueError, match="class id 5.*2 classes"):
        seg.confusion(PRED_A[None], torch.full((1, 4, 4), 5, dtype=torch.uint8), 2)
    with pytest.raises(ValueError, match="one shape"):
        seg.confusion(PRED_A[None], TRUTH_A[None, :2], 2)
    with pytest.raises(ValueError, match="N×C×H×W"):
        seg.predict(torch.zeros(2, 4, 4))


def test_predict_binary_and_multiclass() -> None:
    binary = torch.tensor([[[[0.5, -0.5], [0.0, 2.0]]]])  # foreground where the logit is > 0
    assert seg.predict(binary).tolist() == [[[1, 0], [0, 1]]]
    multi = torch.tensor([[[[1.0, 0.0]], [[0.0, 2.0]], [[3.0, 1.0]]]])  # 3 classes, 1×2 pixels
    assert seg.predict(multi).tolist() == [[[2, 1]]]
    assert seg.classes_of(1) == 2 and seg.classes_of(5) == 5


def square(top: int, left: int, size: int = 6, side: int = 4) -> torch.Tensor:
    out = torch.zeros(size, size, dtype=torch.uint8)
    out[top : top + side, left : left + side] = 1
    return out


def test_boundary_map_by_hand() -> None:
    # a 4x4 square in a 6x6 image: its ring of 12 foreground pixels and the 20 background pixels touching it
    edge = seg.boundary_map(square(1, 1)[None].long())[0]
    assert int((edge & (square(1, 1) == 1)).sum()) == 12
    # the square moved to the right edge: the image's edge is no boundary, so (2,5) and (3,5) are inside
    shifted = seg.boundary_map(square(1, 2)[None].long())[0]
    assert int((shifted & (square(1, 2) == 1)).sum()) == 10
    assert not shifted[2, 5] and not shifted[3, 5]


def test_boundary_f_by_hand() -> None:
    truth, pred = square(1, 1)[None], square(1, 2)[None]
    # tolerance 0: 6 boundary pixels shared (rows 1 and 4, columns 2..4) of 10 predicted and 12 true:
    # P = 6/10, R = 6/12, F = 2PR/(P+R) = 6/11
    assert seg.boundary_f(pred, truth, 2, tolerance=0).tolist() == pytest.approx([6 / 11])
    # tolerance 1: every boundary pixel of each has one of the other's at distance 1
    assert seg.boundary_f(pred, truth, 2, tolerance=1).tolist() == [1.0]
    # no foreground in either: 1; foreground in one only: 0
    empty = torch.zeros(1, 6, 6, dtype=torch.uint8)
    assert seg.boundary_f(empty, empty, 2, tolerance=2).tolist() == [1.0]
    assert seg.boundary_f(pred, empty, 2, tolerance=2).tolist() == [0.0]
    # pixels the truth ignores are dropped from both boundaries: ignore the column only the prediction
    # covers and the one only the truth covers. Predicted boundary: 10 less (1,5) and (4,5) = 8, all on
    # the truth's; the truth's: the ring of its 4x3 block (next to ignored pixels too) = 10, of which
    # (2,4) and (3,4) are inside the prediction: P = 1, R = 8/10, F = 8/9
    ignored = truth.clone()
    ignored[0, :, 5] = 255
    ignored[0, 1:5, 1] = 255
    assert seg.boundary_f(pred, ignored, 2, tolerance=0).tolist() == pytest.approx([8 / 9])


def test_boundary_f_multiclass_averages_classes_with_a_boundary() -> None:
    truth = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1]]], dtype=torch.uint8)
    # class 2 exists in neither map: left out; classes 0 and 1 match exactly
    assert seg.boundary_f(truth, truth, 3, tolerance=0).tolist() == [1.0]
    pred = torch.tensor([[[0, 0, 2, 2], [0, 0, 2, 2]]], dtype=torch.uint8)
    # class 0's boundary matches (F 1); class 1 only true, class 2 only predicted: F 0 each
    assert seg.boundary_f(pred, truth, 3, tolerance=0).tolist() == pytest.approx([1 / 3])


def test_mask_iou_between_predictions() -> None:
    # binary: the foreground's IoU (3 shared of 5 in either); both empty: 1
    iou = seg.mask_iou(torch.stack([PRED_A, ALL_BG]), torch.stack([TRUTH_A, ALL_BG]), 2)
    assert iou.tolist() == pytest.approx([3 / 5, 1.0])
    multi = seg.mask_iou(t([[0, 2], [2, 1]])[None], t([[0, 1], [2, 2]])[None], 4)
    assert multi.tolist() == pytest.approx([(1 + 0 + 1 / 3) / 3])  # classes 0, 1, 2; class 3 in neither
