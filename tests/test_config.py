import copy
from pathlib import Path

import pytest
import yaml

from stitchlib import config as sconf

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_validates_with_defaults_filled():
    cfg = sconf.validate(DEFAULT)
    assert cfg["tlm"]["lr"] == 0.001 and cfg["tlm"]["batch_size"] == 256 and cfg["dm"]["samples"] == 100
    assert sconf.train_settings(cfg, "vit")["epochs"] == 30 and sconf.train_settings(cfg, "resnet18")["epochs"] == 10
    assert len(sconf.network_pairs(cfg, "intra")) == 6 and len(sconf.network_pairs(cfg, "inter")) == 12


def _with(path: str, value):
    cfg = copy.deepcopy(DEFAULT)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


BAD = [
    ("tlm.epochs", -1, "tlm.epochs"),
    ("tlm.lr", "fast", "tlm.lr"),
    ("seeds", [], "seeds"),
    ("seeds", [0, 0], "seeds"),
    ("bogus", 1, "'bogus' was unexpected"),
    ("dm.samples", 5000, "dm.samples"),
    ("dm.samples", "some", "dm.samples"),
    ("datasets.mnist", {}, "unknown dataset 'mnist'"),
    ("datasets.cifar10", {"root": "/no/such/folder"}, "datasets.cifar10.root: /no/such/folder/cifar-10-batches-py"),
    ("datasets.svhn", {}, "datasets.svhn.root"),
    ("architectures.resnet18.family", "resnet1000", "architectures.resnet18.family: unknown architecture"),
    ("architectures.resnet18.layers", ["layer1.0", "layer9.9"], "architectures.resnet18.layers[1]"),
    ("architectures.resnet18.layers", ["layer2.0", "layer1.0"], "in network order"),
    ("architectures.resnet18.params", {"depth": 3}, "unknown parameter"),
    ("architectures.vit.params", {"patch_size": 5}, "patch_size"),
    ("architectures.vit.train", {"epochs": "ten"}, "architectures.vit.train.epochs"),
    ("architectures.bad-name", {"family": "vit"}, "architectures"),
    ("stitching.settings", ["sideways"], "stitching.settings[0]"),
    ("stitching.methods", ["magic"], "stitching.methods[0]"),
    ("tlm.labels", "fuzzy", "tlm.labels"),
    ("tlm.augment", "flip_crop", "tlm.augment"),
    ("tables.tie_rule", "coin", "tables.tie_rule"),
    ("results", "../../etc; rm -rf /", "results"),
    ("device", "tpu", "device"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[b[0] + "=" + repr(b[1])[:20] for b in BAD])
def test_malformed_config_is_rejected_with_key_path(path, value, expected):
    with pytest.raises(sconf.ConfigError, match=None) as e:
        sconf.validate(_with(path, value))
    assert expected in str(e.value), str(e.value)


def test_inter_needs_two_seeds():
    with pytest.raises(sconf.ConfigError, match="two seeds"):
        sconf.validate(_with("seeds", [0]))


def test_network_ids_round_trip():
    assert sconf.parse_network(sconf.network_id("my_net", 12)) == ("my_net", 12)


def test_paper1_config_validates_against_a_cifar_layout(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "paper1-cifar10.yaml").read_text())
    raw["datasets"]["cifar10"]["root"] = str(tmp_path)
    with pytest.raises(sconf.ConfigError, match="datasets.cifar10.root"):
        sconf.validate(raw)
    (tmp_path / "cifar-10-batches-py").mkdir()
    for f in ("data_batch_1", "test_batch"):
        (tmp_path / "cifar-10-batches-py" / f).touch()
    with pytest.raises(sconf.ConfigError, match="ood.outliers.path"):
        sconf.validate(raw)
    raw["ood"]["outliers"]["path"] = str(tmp_path / "300K.npy")
    (tmp_path / "300K.npy").touch()
    cfg = sconf.validate(raw)
    assert cfg["similarity"]["samples"] == 1000 and cfg["ood"]["detector"]["conv"]["width"] == 64
    assert len(sconf.networks(cfg)) == 20
    assert len(sconf.network_pairs(cfg, "inter")) == 2 * 90


def test_stitching_architectures_selects_paper1_networks():
    cfg = sconf.validate(_with("stitching.architectures", ["resnet18"]))
    assert sconf.networks(cfg) == ["resnet18-s0", "resnet18-s1", "resnet18-s2"]
    assert len(sconf.network_pairs(cfg, "inter")) == 6
    with pytest.raises(sconf.ConfigError, match=r"stitching.architectures\[0\]: 'nope'"):
        sconf.validate(_with("stitching.architectures", ["nope"]))
