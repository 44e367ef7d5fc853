"""The cached SynthAU trunks that studies start their ResNets from."""

import json

import pytest
import torch

from au_lightning.errors import ConfigError
from au_lightning.nn import resnet_backbone
from au_lightning.trunks import TrunkSpec, ensure_synth_trunk

TINY = {"subjects": 3, "videos": 1, "frames": 6, "size": 32, "seed": 1000}


def tiny(**changes) -> TrunkSpec:
    spec = {"population": TINY, "steps": 2, "batch_size": 4, "image_size": 32, "crop_size": 28}
    return TrunkSpec(**{**spec, **changes})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("AU_LIGHTNING_CACHE", str(tmp_path / "cache"))


def test_trunk_is_cached_deterministic_and_loads_as_pretrained(tmp_path):
    path = ensure_synth_trunk(tiny(), tmp_path / "a")
    again = ensure_synth_trunk(tiny(), tmp_path / "a")
    assert again == path and again.stat().st_mtime_ns == path.stat().st_mtime_ns
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["task"] == "aus" and info["steps"] == 2 and info["final_loss"] > 0
    other = ensure_synth_trunk(tiny(), tmp_path / "b")  # trained again, elsewhere
    a, b = torch.load(path, weights_only=True), torch.load(other, weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    fresh, _ = resnet_backbone(18)
    loaded, _ = resnet_backbone(18, pretrained=str(path))
    assert torch.equal(loaded.conv1.weight, a["conv1.weight"])
    assert not torch.equal(fresh.conv1.weight, a["conv1.weight"])


def test_spec_changes_change_the_key_and_the_weights(tmp_path):
    aus = ensure_synth_trunk(tiny(), tmp_path)
    identity = ensure_synth_trunk(tiny(task="identity"), tmp_path)
    assert aus != identity and "identity" in identity.name
    a, b = torch.load(aus, weights_only=True), torch.load(identity, weights_only=True)
    assert not torch.equal(a["layer4.1.conv2.weight"], b["layer4.1.conv2.weight"])


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="trunk task 'faces'"):
        ensure_synth_trunk(tiny(task="faces"), tmp_path)


def test_loader_workers_do_not_change_the_trunk(tmp_path):
    # each step's batch is loaded under its own seed, in whichever process loads it
    single = ensure_synth_trunk(tiny(steps=3), tmp_path / "single")
    workers = ensure_synth_trunk(tiny(steps=3), tmp_path / "workers", workers=2)
    a, b = torch.load(single, weights_only=True), torch.load(workers, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    later = ensure_synth_trunk(tiny(steps=4), tmp_path / "single")  # one step more differs
    c = torch.load(later, weights_only=True)
    assert not torch.equal(a["layer4.1.conv2.weight"], c["layer4.1.conv2.weight"])


def test_a_decoded_image_cache_gives_the_same_trunk(tmp_path):
    from au_lightning.data import build_image_cache, cached_read
    from au_lightning.data.image_cache import find_image_cache
    from au_lightning.data.synth import ensure_synthau

    jpegs = ensure_synth_trunk(tiny(), tmp_path / "jpegs")
    index = cached_read("bp4d", ensure_synthau("bp4d", progress=False, **TINY))
    build_image_cache(index, 32)
    assert find_image_cache(index, 32) is not None
    cached = ensure_synth_trunk(tiny(), tmp_path / "cached")
    a, b = torch.load(jpegs, weights_only=True), torch.load(cached, weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("withheld", [(), (23,)])
def test_withheld_au_labels_never_reach_the_trunk(tmp_path, monkeypatch, withheld):
    """Inverting AU23's labels changes the trunk unless AU23 is withheld (Table 6's trunk)."""
    import dataclasses

    import au_lightning.trunks as trunks

    read = trunks.read_dataset

    def inverted(*args, **kwargs):
        index = read(*args, **kwargs)
        occurrence = index.occurrence.copy()
        column = occurrence[:, index.aus.index(23)]
        column[column >= 0] = 1 - column[column >= 0]
        return dataclasses.replace(index, occurrence=occurrence)

    spec = tiny(withheld_aus=withheld, steps=3)
    plain = torch.load(ensure_synth_trunk(spec, tmp_path / "plain"), weights_only=True)
    monkeypatch.setattr(trunks, "read_dataset", inverted)
    flipped = torch.load(ensure_synth_trunk(spec, tmp_path / "flipped"), weights_only=True)
    same = all(torch.equal(plain[k], flipped[k]) for k in plain)
    assert same == bool(withheld)


def test_withheld_aus_key_and_errors(tmp_path):
    assert tiny().key() != tiny(withheld_aus=(23,)).key()
    with pytest.raises(ConfigError, match=r"withheld_aus \[9\] are not among"):
        ensure_synth_trunk(tiny(withheld_aus=(9,)), tmp_path)
    with pytest.raises(ConfigError, match="need the task 'aus'"):
        ensure_synth_trunk(tiny(task="identity", withheld_aus=(23,)), tmp_path)
