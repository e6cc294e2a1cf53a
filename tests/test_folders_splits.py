"""Pairing files in both data-set layouts, and seeded, nested, reproducible splits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import synthetic_pair, write_image

from cganseg.data.folders import find_pairs
from cganseg.data.splits import kfold_indices, load_split, make_split, save_split
from cganseg.errors import InputError

# ---------------------------------------------------------------- find_pairs


def _touch_pair(image: Path, mask: Path) -> None:
    img, labels = synthetic_pair()
    write_image(image, img)
    write_image(mask, labels)


def test_folders_layout_mixed_extensions(tmp_path: Path) -> None:
    _touch_pair(tmp_path / "images/b.png", tmp_path / "masks/b.tif")
    _touch_pair(tmp_path / "images/a.TIF", tmp_path / "masks/a.png")
    pairs = find_pairs(tmp_path, layout="folders")
    assert [p.name for p in pairs] == ["a", "b"]
    assert pairs[0].image.name == "a.TIF" and pairs[0].mask.name == "a.png"
    assert pairs[1].image.name == "b.png" and pairs[1].mask.name == "b.tif"
    assert find_pairs(tmp_path) == pairs  # auto picks folders


def test_cellpose_layout_default_suffix_and_flows_ignored(tmp_path: Path, dataset_factory) -> None:
    root = dataset_factory(tmp_path, n=3, layout="cellpose", image_ext=".tif", mask_ext=".png")
    write_image(root / "img00_flows.tif", np.zeros((40, 52), np.uint8))
    pairs = find_pairs(root)  # auto picks cellpose
    assert [p.name for p in pairs] == ["img00", "img01", "img02"]
    assert pairs[0].image == root / "img00.tif"
    assert pairs[0].mask == root / "img00_masks.png"
    assert find_pairs(root, layout="cellpose") == pairs


def test_cellpose_custom_suffixes(tmp_path: Path) -> None:
    _touch_pair(tmp_path / "x1_img.tif", tmp_path / "x1_seg.tif")
    _touch_pair(tmp_path / "x2_img.png", tmp_path / "x2_seg.png")
    pairs = find_pairs(tmp_path, mask_suffix="_seg", image_suffix="_img")
    assert [(p.name, p.image.name, p.mask.name) for p in pairs] == [
        ("x1", "x1_img.tif", "x1_seg.tif"),
        ("x2", "x2_img.png", "x2_seg.png"),
    ]


@pytest.mark.parametrize("layout", ["folders", "cellpose"])
def test_image_without_mask_is_named(tmp_path: Path, dataset_factory, layout: str) -> None:
    root = dataset_factory(tmp_path, n=2, layout=layout)
    orphan = root / ("images/zz.png" if layout == "folders" else "zz.png")
    write_image(orphan, synthetic_pair()[0])
    with pytest.raises(InputError, match="no mask") as exc:
        find_pairs(root)
    assert exc.value.path == orphan and "zz.png" in str(exc.value)


@pytest.mark.parametrize("layout", ["folders", "cellpose"])
def test_mask_without_image_is_named(tmp_path: Path, dataset_factory, layout: str) -> None:
    root = dataset_factory(tmp_path, n=2, layout=layout)
    orphan = root / ("masks/zz.png" if layout == "folders" else "zz_masks.png")
    write_image(orphan, synthetic_pair()[1])
    with pytest.raises(InputError, match="no image") as exc:
        find_pairs(root)
    assert exc.value.path == orphan


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown layout"):
        find_pairs(tmp_path)  # auto cannot tell
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(InputError, match="no image/mask pairs") as exc:
        find_pairs(tmp_path)
    assert exc.value.path == tmp_path
    with pytest.raises(InputError, match="not found"):
        find_pairs(tmp_path / "nope")


def test_unknown_layout_name(tiny_dataset: Path) -> None:
    with pytest.raises(InputError, match="unknown layout 'zarr'"):
        find_pairs(tiny_dataset, layout="zarr")


def test_duplicate_stems_refused(tiny_dataset: Path) -> None:
    write_image(tiny_dataset / "images/img00.tif", synthetic_pair()[0])
    with pytest.raises(InputError, match="img00.png and img00.tif|img00.tif and img00.png"):
        find_pairs(tiny_dataset)


# ---------------------------------------------------------------- make_split

NAMES = [f"n{i:03d}" for i in range(40)]


def test_split_deterministic_and_order_independent() -> None:
    a = make_split(NAMES, val_fraction=0.1, test_fraction=0.2, seed=3)
    b = make_split(list(reversed(NAMES)), val_fraction=0.1, test_fraction=0.2, seed=3)
    assert a == b
    assert make_split(NAMES, val_fraction=0.1, test_fraction=0.2, seed=4) != a


def test_split_fractions_and_partition() -> None:
    split = make_split(NAMES, val_fraction=0.25, test_fraction=0.2, seed=0)
    assert len(split["test"]) == 8  # ceil(0.2 * 40)
    assert len(split["val"]) == 8  # round(0.25 * 32)
    assert len(split["train"]) == 24
    every = split["train"] + split["val"] + split["test"]
    assert sorted(every) == NAMES  # disjoint and covering


def test_test_set_independent_of_n_train_and_subsets_nest() -> None:
    full = make_split(NAMES, val_fraction=0.1, test_fraction=0.25, seed=7)
    three = make_split(NAMES, val_fraction=0.1, test_fraction=0.25, n_train=3, seed=7)
    five = make_split(NAMES, val_fraction=0.1, test_fraction=0.25, n_train=5, seed=7)
    assert three["test"] == five["test"] == full["test"]
    assert three["val"] == five["val"] == full["val"]
    assert len(three["train"]) == 3 and len(five["train"]) == 5
    assert set(three["train"]) < set(five["train"]) < set(full["train"])


@pytest.mark.parametrize("n_train", [0, 37])
def test_bad_n_train(n_train: int) -> None:
    with pytest.raises(InputError, match="n-train"):
        make_split(NAMES, val_fraction=0.1, n_train=n_train)  # 36 left for training


def test_bad_fraction() -> None:
    with pytest.raises(InputError, match="test_fraction"):
        make_split(NAMES, test_fraction=1.0)


def test_kfold_disjoint_and_covering() -> None:
    folds = kfold_indices(23, 5, seed=1)
    tests = [t for _, t in folds]
    assert sorted(np.concatenate(tests).tolist()) == list(range(23))
    for train, test in folds:
        assert not set(train) & set(test)
        assert len(train) + len(test) == 23
    assert [t.tolist() for _, t in kfold_indices(23, 5, seed=1)] == [t.tolist() for t in tests]
    with pytest.raises(InputError):
        kfold_indices(3, 4)


def test_split_save_load_round_trip(tmp_path: Path) -> None:
    split = make_split(NAMES, val_fraction=0.1, test_fraction=0.2, seed=2)
    save_split(tmp_path / "split.json", split)
    assert load_split(tmp_path / "split.json") == split


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"train": [', "cannot read"),
        ("[1, 2]", "JSON object"),
        ('{"train": "a"}', "JSON object"),
        ('{"train": [], "val": ["a"]}', "'train' list is empty"),
        ('{"train": ["a", "b"], "test": ["b"]}', "'b' in both 'train' and 'test'"),
        ('{"train": ["a", "a"]}', "'a' twice"),
    ],
)
def test_malformed_split_file(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as exc:
        load_split(path)
    assert exc.value.path == path and "\n" not in str(exc.value)


def test_missing_split_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read split"):
        load_split(tmp_path / "none.json")


def test_split_json_is_plain_lists(tmp_path: Path) -> None:
    save_split(tmp_path / "s.json", {"train": ["a"], "val": [], "test": []})
    assert json.loads((tmp_path / "s.json").read_text()) == {"train": ["a"], "val": [], "test": []}
