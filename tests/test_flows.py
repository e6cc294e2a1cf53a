"""The flow output (issue 16): Cellpose's flow targets, loss and flow-following instances, in
train-seg, checkpoints and ``cganseg segment``."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import torch
import yaml
from skimage.draw import disk, ellipse
from tests.helpers import make_dataset, tiny_cgan_config, tiny_seg_config

from cganseg.checkpoint import load_checkpoint
from cganseg.cli import main
from cganseg.data.augment import ConventionalAugment
from cganseg.data.dataset import CropDataset, Sample, make_image_targets
from cganseg.data.flows import labels_to_flows
from cganseg.data.io import read_labels
from cganseg.data.rescale import resize_labels
from cganseg.errors import InputError
from cganseg.evaluation.matching import match_instances
from cganseg.inference.segment import load_segmenter
from cganseg.instances import MODES
from cganseg.instances.flows import flows_to_instances
from cganseg.instances.postprocessing import PostProcessing
from cganseg.losses.flow_loss import FLOW_SCALE, FlowLoss
from cganseg.options import CGanTrainConfig, SegTrainConfig
from cganseg.training.cgan_trainer import CGanTrainer, train_cgan
from cganseg.training.seg_trainer import train_segmenter
from cganseg.training.tuning import tune_thresholds


def _touching_cells() -> np.ndarray:
    """Three irregular touching cells (two ellipses and a disc pressed together), ids 4, 7, 9."""
    labels = np.zeros((64, 72), np.int32)
    labels[ellipse(30, 20, 14, 9, shape=labels.shape, rotation=0.4)] = 4
    labels[ellipse(30, 38, 16, 10, shape=labels.shape, rotation=-0.3)] = 7
    labels[disk((46, 50), 10, shape=labels.shape)] = 9
    return labels


def _perfect_output(labels: np.ndarray) -> np.ndarray:
    """What a perfect network outputs: 5x the flows and confident cell logits."""
    flows = labels_to_flows(labels)
    return np.concatenate([FLOW_SCALE * flows[:2], np.where(flows[2:] > 0, 6.0, -6.0)])


def test_flows_are_unit_vectors_inside_cells_that_point_towards_each_cells_centre():
    labels = _touching_cells()
    flows = labels_to_flows(labels)
    assert flows.shape == (3, *labels.shape) and flows.dtype == np.float32
    inside = labels > 0
    np.testing.assert_array_equal(flows[2], inside.astype(np.float32))
    assert np.all(flows[:2, ~inside] == 0)
    norms = np.hypot(flows[0], flows[1])[inside]
    assert np.mean(np.abs(norms - 1) < 1e-3) > 0.99
    for cell in (4, 7, 9):  # along each flow the distance to the cell's centre falls
        ys, xs = np.nonzero(labels == cell)
        cy, cx = ys.mean(), xs.mean()
        towards = flows[0, ys, xs] * (cy - ys) + flows[1, ys, xs] * (cx - xs)
        far = np.hypot(cy - ys, cx - xs) > 3
        assert np.mean(towards[far] > 0) > 0.9, cell


def test_flows_of_an_empty_mask_are_zero():
    assert not labels_to_flows(np.zeros((16, 16), np.int32)).any()


def test_following_perfect_flows_gives_back_touching_cells():
    labels = _touching_cells()
    found = flows_to_instances(_perfect_output(labels), min_size=15)
    assert found.dtype == np.int32 and set(np.unique(found)) == {0, 1, 2, 3}
    (match,) = match_instances(labels, found, thresholds=(0.9,))
    assert (match.tp, match.fp, match.fn) == (3, 0, 0)


def test_connected_components_merge_what_flows_separate():
    """The reason for the mode: the three cells touch, so their foreground is one blob."""
    from skimage.measure import label

    assert label(_touching_cells() > 0).max() == 1


def test_flow_thresholds_drop_cells():
    labels = _touching_cells()
    out = _perfect_output(labels)
    assert flows_to_instances(out, cellprob_threshold=7.0).max() == 0  # no pixel above 7
    noisy = out.copy()
    noisy[:2] = np.random.default_rng(0).normal(0, 5, size=noisy[:2].shape)
    assert flows_to_instances(noisy, flow_threshold=0.4).max() < flows_to_instances(
        noisy, flow_threshold=0.0
    ).max()



@pytest.mark.parametrize("flow_threshold", [0.0, 0.185, 0.4])  # 0.185 drops one of 3 cells
def test_following_once_then_checking_flows_equals_cellposes_compute_masks(flow_threshold):
    """Tuning follows the flows once and applies each flow threshold after: the cells must be
    those of Cellpose's own ``compute_masks`` with that threshold."""
    from cellpose import dynamics

    out = _perfect_output(_touching_cells())
    out[:2] += np.random.default_rng(1).normal(0, 1.5, size=out[:2].shape)
    out = out.astype(np.float32)  # as a network gives it (numba's kernels take float32)
    ours = flows_to_instances(out, flow_threshold=flow_threshold, min_size=0)
    theirs = dynamics.compute_masks(out[:2], out[2], flow_threshold=flow_threshold, min_size=-1)
    assert ours.max() == (2 if flow_threshold == 0.185 else 3)
    np.testing.assert_array_equal(ours > 0, theirs > 0)
    (match,) = match_instances(theirs, ours, thresholds=(0.99,))
    assert match.fp == match.fn == 0

def test_flow_output_shape_is_checked():
    with pytest.raises(InputError, match=r"\(3, H, W\)"):
        flows_to_instances(np.zeros((2, 8, 8), np.float32))


def test_flow_loss_is_small_for_a_perfect_output_and_trains_every_channel():
    target = torch.from_numpy(labels_to_flows(_touching_cells()))[None]
    perfect = torch.from_numpy(_perfect_output(_touching_cells()))[None] * torch.tensor(
        [1.0, 1.0, 3.0]
    ).view(1, 3, 1, 1)
    loss = FlowLoss()
    assert loss(perfect, target) < 1e-3
    guess = torch.zeros_like(target, requires_grad=True)
    value = loss(guess, target)
    value.backward()
    assert value > 0.5 and all(guess.grad[0, c].abs().sum() > 0 for c in range(3))


class _FixedOutput:
    """Stands in for a Segmenter whose network outputs ``out`` for every image, at the size
    where it finds cells (``out``'s own: smaller than the image when the network shrinks it)."""

    post = PostProcessing("flows", min_size=15)

    def __init__(self, out: np.ndarray) -> None:
        self.out = out

    def label_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        return self.out.shape[-2:]

    def predict(self, image: np.ndarray, tile_size: int, shape: tuple[int, int]) -> np.ndarray:
        assert tuple(shape) == self.out.shape[-2:]
        return self.out


@pytest.mark.parametrize("scale", [1, 2])
def test_tuning_chooses_the_thresholds_that_score_best_on_validation(scale):
    """``scale`` 2: the network sees the image at half size, where cells are found (issue
    32); tuning scores them fitted to the image's size, as segment makes them."""
    labels = _touching_cells()
    with_blob = labels.copy()
    with_blob[disk((12, 60), 7, shape=labels.shape)] = 20  # not a cell: its logit is only 0.5
    small = resize_labels(with_blob, (labels.shape[0] // scale, labels.shape[1] // scale))
    out = _perfect_output(small)
    out[2][small == 20] = 0.5
    sample = Sample("v", np.zeros((1, *labels.shape), np.float32), labels)
    tuned = tune_thresholds(_FixedOutput(out), [sample], tile_size=64)
    assert tuned["cellprob_threshold"] == 1.0  # the only one above the blob and below the cells
    assert tuned["flow_threshold"] == 0.4 and tuned["val_mean_f1"] > 0.9 - 0.1 * scale


def test_crop_targets_are_the_flows_of_the_augmented_crop():
    labels = _touching_cells()
    sample = Sample("a", np.zeros((1, *labels.shape), np.float32), labels)
    targets = functools.partial(MODES["flows"].targets, n_classes=3)
    ds = CropDataset([sample], (32, 32), targets, ConventionalAugment(p_vanilla=1.0, p_op=1.0))
    for seed in range(4):
        image, target = ds[(0, seed)]
        assert image.shape == (1, 32, 32) and target.shape == (3, 32, 32)
        assert target.dtype == torch.float32
        # every cell pixel carries a unit flow, every background pixel none
        cell = target[2] > 0
        norms = torch.hypot(target[0], target[1])
        assert torch.all(norms[~cell] == 0) and torch.all((norms[cell] - 1).abs() < 1e-3)


DISCS = [(12, 12, 6), (14, 32, 7), (28, 20, 5), (28, 36, 4)]


def _discs() -> np.ndarray:
    """Separate discs centred on pixels (one nearest-to-mean pixel each, so a flip moves the
    diffusion's centre with the cell), well inside a 40x48 image."""
    labels = np.zeros((40, 48), np.int32)
    for i, (y, x, r) in enumerate(DISCS, 1):
        labels[disk((y, x), r, shape=labels.shape)] = i
    return labels


@pytest.mark.parametrize("ops", [("hflip",), ("vflip",), ("hflip", "vflip")])
def test_flipped_whole_image_flows_are_the_flows_of_the_flipped_mask(ops):
    """Moving flows (issue 32): a flip flips the field and negates its vector's component along
    the flipped axis, which is what Cellpose's masks_to_flows gives for the flipped mask."""
    labels = _discs()
    augment = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=ops)
    steps = augment.draw(np.random.default_rng(0), labels.shape)
    moved_image, moved_mask = augment.apply(torch.zeros(1, *labels.shape),
                                            torch.from_numpy(labels), steps)  # fmt: skip
    moved = augment.move_field(torch.from_numpy(labels_to_flows(labels)), steps, (0, 1))
    own = torch.from_numpy(labels_to_flows(moved_mask.numpy()))
    differ = {tuple(p) for p in np.argwhere((moved - own).abs().amax(0).numpy() > 1e-5)}
    # everywhere but at a centre, where the gradient is 0/0 and its sign rounding noise
    centres = {(39 - y if "vflip" in ops else y, 47 - x if "hflip" in ops else x)
               for y, x, _ in DISCS}  # fmt: skip
    assert differ <= centres and torch.equal(moved[2], own[2])


def test_moved_targets_equal_the_crops_own():
    """A crop of whole-image flows, its cut cells remade, equals the flows of the crop's mask
    (exactly, without augmentation), cut cells included: they point into the crop, as a cell
    cut by the image's border is annotated; with the paper's augmentation (zoom, flips) the
    cell indicator is exactly the augmented mask, cut cells' flows equal the per-crop path's,
    and the image is the one the per-crop path gives for the same seed."""
    labels = _discs()
    sample = Sample("a", np.random.default_rng(1).random((1, *labels.shape), np.float32), labels)
    targets = functools.partial(MODES["flows"].targets, n_classes=3)
    made = make_image_targets([sample], (24, 24), targets, progress=False)
    assert made[0].shape == (3, 40, 48)
    plain = CropDataset([sample], (24, 24), targets, None, made, (0, 1))
    cut = 0
    for seed in range(12):
        image, moved = plain[(0, seed)]
        rng = np.random.default_rng(seed)
        y, x = int(rng.integers(0, 17)), int(rng.integers(0, 25))
        crop = labels[y : y + 24, x : x + 24]
        assert torch.equal(image, torch.from_numpy(sample.image[:, y : y + 24, x : x + 24]))
        assert np.array_equal(moved.numpy(), labels_to_flows(crop))
        whole = [i for i in np.unique(crop[crop > 0]) if (crop == i).sum() == (labels == i).sum()]
        cut += int((crop > 0).sum() - np.isin(crop, whole).sum())
    assert cut > 100  # crops that cut cells were drawn (their whole-image flows differ)
    aug = ConventionalAugment(p_vanilla=1.0, p_op=1.0, ops=("crop", "hflip", "vflip", "noise"))
    augmented = CropDataset([sample], (24, 24), targets, aug, made, (0, 1))
    per_crop = CropDataset([sample], (24, 24), targets, aug)
    ids = CropDataset([sample], (24, 24), lambda m: torch.from_numpy(m.astype(np.int64)), aug)
    for seed in range(6):
        (image, moved), (image_slow, slow) = augmented[(0, seed)], per_crop[(0, seed)]
        assert torch.equal(image, image_slow) and torch.equal(moved[2], slow[2])
        mask = ids[(0, seed)][1].numpy()  # the augmented crop's mask
        edge = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        on_edge = torch.from_numpy(np.isin(mask, edge[edge > 0]))
        assert torch.equal(moved[:, on_edge], slow[:, on_edge])
        norms = torch.hypot(moved[0], moved[1])
        assert torch.all(norms[moved[2] == 0] == 0)
        assert torch.all((norms[(moved[2] > 0) & ~on_edge] - 1).abs() < 1e-3)


def test_a_flow_run_makes_its_targets_once_per_image(tmp_path):
    """The trainer's data stream carries the whole-image flows (no masks_to_flows per crop)."""
    from cganseg.training.seg_trainer import SegTrainer

    cfg = tiny_seg_config(make_dataset(tmp_path / "data"), tmp_path / "run", instances="flows",
                          iterations=1)  # fmt: skip
    trainer = SegTrainer.from_config(cfg)
    dataset = trainer.train_loader.dataset
    assert len(dataset.image_targets) == len(trainer.data.train)
    assert dataset.image_targets[0].shape[0] == 3 and dataset.vector == (0, 1)


def test_config_resolves_instances_and_refuses_what_cannot_work(tmp_path):
    assert SegTrainConfig(data="d", out="o").instances == "flows"
    assert SegTrainConfig(data="d", out="o", n_classes=2).instances == "components"
    with pytest.raises(InputError, match="watershed needs 3 classes"):
        SegTrainConfig.from_dict({"data": "d", "out": "o", "n_classes": 2,
                                  "instances": "watershed"})  # fmt: skip
    with pytest.raises(InputError, match="instances must be one of"):
        SegTrainConfig.from_dict({"data": "d", "out": "o", "instances": "stardist"})


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("flows")
    cfg = tiny_seg_config(make_dataset(root / "data"), root / "run", instances="flows",
                          iterations=4, val_every=2)  # fmt: skip
    train_segmenter(SegTrainConfig.from_dict(cfg.to_dict()), progress=False)
    return root / "run"


def test_train_seg_with_flows_records_the_mode_and_validates(flow_run):
    cfg = yaml.safe_load((flow_run / "config.yaml").read_text())
    assert cfg["instances"] == "flows"
    payload = load_checkpoint(flow_run / "best.pt")
    post = payload["postprocessing"]
    assert post["instances"] == "flows" and payload["model_config"]["n_classes"] == 3
    assert post["cellprob_threshold"] in (0.0, -1.0, 1.0, -2.0)  # tuned on validation
    assert 0.0 <= payload["val_mean_f1"] <= 1.0
    # issue 33: config.yaml says which thresholds best.pt uses (a comment: options unchanged)
    note = (flow_run / "config.yaml").read_text().splitlines()[-1]
    assert note.startswith("# tuned after training") and "(and segment)" in note
    assert f"cellprob_threshold {post['cellprob_threshold']:g}" in note
    assert f"flow_threshold {post['flow_threshold']:g}" in note
    rows = (flow_run / "metrics.csv").read_text().splitlines()
    assert "val_f1_iou50" in rows[0] and any(r.split(",")[-1] for r in rows[1:])
    assert (flow_run / "test" / "metrics.json").is_file()


def test_segment_runs_a_flow_model(flow_run, tmp_path):
    seg = load_segmenter(flow_run, "cpu")
    assert seg.post.instances == "flows"
    image = np.random.default_rng(0).normal(0, 0.3, size=(1, 40, 52)).astype(np.float32)
    out = seg.predict(image, tile_size=32)
    assert out.shape == (3, 40, 52) and (out[2] < 0).any() | (out[2] > 0).any()
    data = flow_run.parent / "data"
    assert main(["segment", str(flow_run), str(data / "images"), str(tmp_path / "pred")]) == 0
    labels = read_labels(tmp_path / "pred" / "img00.tif")
    assert labels.shape == (40, 52)


def test_a_checkpoint_before_instances_segments_by_its_class_count(seg_run, tmp_path):
    from cganseg.checkpoint import save_checkpoint

    payload = load_checkpoint(seg_run / "best.pt")
    old = {k: v for k, v in payload.items() if k != "postprocessing"}
    old.update(version=2, min_size=9)  # version 2: settings of their own, no instances
    save_checkpoint(tmp_path / "old.pt", old)
    post = load_segmenter(tmp_path / "old.pt", "cpu").post
    assert post.instances == "watershed" and post.min_size == 9
    old.update(version=3, instances="components", flow_threshold=0.2)
    save_checkpoint(tmp_path / "v3.pt", old)
    post = load_segmenter(tmp_path / "v3.pt", "cpu").post
    assert post.instances == "components" and post.flow_threshold == 0.2


def test_cgan_seg_with_flows_maps_the_flow_output_to_masks_for_gen_and_d2(tmp_path):
    """Issue 16 item 4: Gen and D2 see background/cell masks (from the labels for real masks,
    from the cell probability for Seg's output); Id_S and Rec_S train the flows."""
    data = make_dataset(tmp_path / "data")
    cfg = CGanTrainConfig.from_dict(tiny_cgan_config(data, tmp_path / "run", instances="flows",
                                                     seg_to_gen="soft").to_dict())  # fmt: skip
    trainer = CGanTrainer.from_config(cfg)
    assert trainer.gen.config["in_channels"] == 2 and trainer.seg.config["n_classes"] == 3
    images, targets = next(iter(trainer.loader()))
    assert targets.shape[1:] == (3, 32, 32)
    before = [p.detach().clone() for p in trainer.seg.parameters()]
    terms = trainer.train_step(images, targets)
    assert all(torch.isfinite(v) for v in terms.values())
    assert {"id_s", "rec_s", "d2_s", "real_d2", "fake_d2"} <= set(terms)
    after = list(trainer.seg.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    summary = train_cgan(cfg, progress=False)
    assert summary["step"] == cfg.iterations
    payload = load_checkpoint(tmp_path / "run" / "best.pt")
    assert payload["postprocessing"]["instances"] == "flows"
    assert payload["generator_config"]["in_channels"] == 2
    assert main(["generate", str(tmp_path / "run"), str(data / "masks"),
                 str(tmp_path / "gen")]) == 0  # fmt: skip


@pytest.mark.slow
def test_demo_runs_with_the_watershed_too(tmp_path):
    from cganseg.models.vgg import hed_weights_path

    if not hed_weights_path().is_file():
        pytest.skip("hed-vgg16 weights missing: run `cganseg fetch-weights hed-vgg16`")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--iterations", "6", "--gan-iterations", "2",
                 "--instances", "watershed", "--quiet"]) == 0  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert "instances by watershed" in summary["settings"]
    post = load_checkpoint(out / "train_cgan" / "best.pt")["postprocessing"]
    assert post["instances"] == "watershed"
    assert len(list((out / "train_seg" / "predictions").glob("*.tif"))) == 8
