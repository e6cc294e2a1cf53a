"""The checkpoint format's one owner (issue 14): versions, and a trainer's registered state."""

from __future__ import annotations

import pytest
import torch

from cganseg.checkpoint import (
    VERSION,
    load_checkpoint,
    restore_state,
    save_checkpoint,
    state_entries,
)
from cganseg.errors import InputError
from cganseg.inference.segment import load_segmenter


def test_a_checkpoint_without_version_loads_and_a_newer_one_is_refused(tmp_path, seg_run):
    payload = load_checkpoint(seg_run / "best.pt")
    assert payload["version"] == VERSION
    old = {k: v for k, v in payload.items() if k != "version"}  # as written before versions
    save_checkpoint(tmp_path / "old.pt", old)
    assert load_segmenter(tmp_path / "old.pt", "cpu").model.config == payload["model_config"]
    save_checkpoint(tmp_path / "new.pt", {**payload, "version": VERSION + 1})
    with pytest.raises(InputError, match="newer cganseg"):
        load_checkpoint(tmp_path / "new.pt")


def test_registered_state_round_trips_and_a_missing_entry_is_named(tmp_path):
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    rng = torch.Generator().manual_seed(4)
    torch.rand(3, generator=rng)
    objects = {"net_state": net, "optimizer": opt, "rng": rng}
    save_checkpoint(tmp_path / "last.pt", {"format": "x", **state_entries(objects)})
    payload = load_checkpoint(tmp_path / "last.pt")

    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.1)
    rng2 = torch.Generator()
    restore_state({"net_state": net2, "optimizer": opt2, "rng": rng2}, payload, tmp_path)
    assert torch.equal(net2.weight, net.weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    assert torch.equal(torch.rand(3, generator=rng2), torch.rand(3, generator=rng))
    with pytest.raises(InputError, match="'scaler'"):
        restore_state({"scaler": torch.amp.GradScaler("cuda", enabled=False)}, payload, tmp_path)


def test_a_run_folder_gives_the_segmenter_of_best_and_the_generator_of_last(tmp_path, gan_run):
    """best.pt is chosen by the segmenter's validation score: the generator comes from last.pt
    (issue 17: a best.pt at the first validation held a barely trained generator)."""
    import shutil

    from cganseg.checkpoint import GENERATOR, SEGMENTER, resolve_checkpoint
    from cganseg.inference.generate import load_generator

    run = tmp_path / "run"
    shutil.copytree(gan_run, run)
    last = load_checkpoint(run / "last.pt")
    halved = {k: v * 0.5 if v.is_floating_point() else v
              for k, v in last["generator_state"].items()}  # fmt: skip
    save_checkpoint(run / "last.pt", {**last, "generator_state": halved})
    best = load_checkpoint(run / "best.pt")

    assert resolve_checkpoint(run, GENERATOR) == run / "last.pt"
    assert resolve_checkpoint(run, SEGMENTER) == resolve_checkpoint(run) == run / "best.pt"
    gen = load_generator(run, "cpu").model.state_dict()
    assert all(torch.equal(gen[k], v) for k, v in halved.items())
    seg = load_segmenter(run, "cpu").model.state_dict()
    assert all(torch.equal(seg[k], v) for k, v in best["model_state"].items())
    (run / "last.pt").unlink()  # a folder with best.pt alone still has a generator
    gen = load_generator(run, "cpu").model.state_dict()
    assert all(torch.equal(gen[k], v) for k, v in best["generator_state"].items())
