import copy
import re
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


# (key to change, malformed value, key path the message must start with, what it must say)
BAD = [
    ("tlm.epochs", -1, "tlm.epochs", "less than the minimum of 0"),
    ("train.epochs", 2.5, "train.epochs", "not of type 'integer'"),
    ("tlm.lr", "fast", "tlm.lr", "not of type 'number'"),
    ("train.batch_size", -64, "train.batch_size", "less than the minimum of 1"),
    ("train.optimizer", "adamw", "train.optimizer", "'adamw' is not one of"),
    ("seeds", [], "seeds", "should be non-empty"),
    ("seeds", [0, 0], "seeds", "non-unique"),
    ("seeds", "0,1", "seeds", "not of type 'array'"),
    ("seeds", [-1], "seeds[0]", "less than the minimum of 0"),
    ("bogus", 1, "(top level)", "'bogus' was unexpected"),
    ("threads", 0, "threads", "less than the minimum of 1"),
    ("dm.samples", 5000, "dm.samples", "larger than the digits training split (1400)"),
    ("dm.samples", "some", "dm.samples", "not valid under any of the given schemas"),
    ("dm.rcond", -1, "dm.rcond", "less than or equal to the minimum of 0"),
    ("similarity.samples", 1000, "similarity.samples", "larger than the digits test split (397)"),
    ("similarity.measures", ["cka2"], "similarity.measures[0]", "'cka2' is not one of"),
    ("similarity.reshape", {"lcka": "squash"}, "similarity.reshape.lcka", "'squash' is not one of"),
    ("datasets", ["digits"], "datasets", "not of type 'object'"),
    ("datasets.mnist", {}, "datasets.mnist", "unknown dataset 'mnist'"),
    ("datasets.cifar10", {"root": "/no/such/folder"}, "datasets.cifar10.root",
     "/no/such/folder/cifar-10-batches-py/data_batch_1 does not exist"),
    ("datasets.svhn", {}, "datasets.svhn.root", "needs a local root holding: train_32x32.mat, test_32x32.mat"),
    ("datasets.digits.image_size", 2, "datasets.digits.image_size", "less than the minimum of 4"),
    ("architectures.resnet18", {"params": {}}, "architectures.resnet18", "'family' is a required property"),
    ("architectures.resnet18.family", "resnet1000", "architectures.resnet18.family", "is not one of ['resnet18'"),
    ("architectures.resnet18.layers", ["layer1.0", "layer9.9"], "architectures.resnet18.layers[1]",
     "resnet18 has no layer 'layer9.9'"),
    ("architectures.resnet18.layers", ["layer2.0", "layer1.0"], "architectures.resnet18.layers", "in network order"),
    ("architectures.resnet18.layers", [], "architectures.resnet18.layers", "should be non-empty"),
    ("architectures.vit.layers", ["block7"], "architectures.vit.layers[0]", "vit has no layer 'block7'"),
    ("architectures.resnet18.params", {"depth": 3}, "architectures.resnet18.params", "unknown parameter(s) ['depth']"),
    ("architectures.vit.params", {"depth": "six"}, "architectures.vit.params.depth", "expected int, got 'six'"),
    ("architectures.vit.params", {"patch_size": 5}, "architectures.vit.params.patch_size", "does not divide"),
    ("architectures.vit.train", {"epochs": "ten"}, "architectures.vit.train.epochs", "not of type 'integer'"),
    ("architectures.resnet18.train", {"epoch": 3}, "architectures.resnet18.train", "'epoch' was unexpected"),
    ("architectures.bad-name", {"family": "vit"}, "architectures", "'bad-name' does not match"),
    ("stitching.settings", ["sideways"], "stitching.settings[0]", "'sideways' is not one of"),
    ("stitching.methods", ["magic"], "stitching.methods[0]", "'magic' is not one of"),
    ("stitching.methods", [], "stitching.methods", "should be non-empty"),
    ("tlm.labels", "fuzzy", "tlm.labels", "'fuzzy' is not one of"),
    ("tlm.augment", "flip_crop", "tlm.augment", "the frozen fronts must be recomputed"),
    ("cache.test.samples", 1000, "cache.test.samples", "larger than the digits test split"),
    ("cache.consumers.tlm", "sometimes", "cache.consumers.tlm", "is not one of"),
    ("tlm.group_size", 0, "tlm.group_size", "not valid under any of the given schemas"),
    ("extract.dtype", "float64", "extract.dtype", "'float64' is not one of"),
    ("ood.enabled", "yes", "ood.enabled", "not of type 'boolean'"),
    ("ood.outliers.n", 0, "ood.outliers.n", "less than the minimum of 1"),
    ("tables.tie_rule", "coin", "tables.tie_rule", "'coin' is not one of"),
    ("results", "../../etc; rm -rf /", "results", "does not match"),
    ("device", "tpu", "device", "'tpu' is not one of"),
]


@pytest.mark.malformed_config
@pytest.mark.parametrize("path,value,key,detail", BAD, ids=[f"{b[0]}={b[1]!r:.20}" for b in BAD])
def test_malformed_config_is_rejected_with_key_path(path, value, key, detail):
    with pytest.raises(sconf.ConfigError) as e:
        sconf.validate(_with(path, value))
    message = str(e.value)
    assert re.match(rf"(config key )?{re.escape(key)}: ", message), message  # the key path comes first
    assert detail in message, message


@pytest.mark.malformed_config
def test_inter_needs_two_seeds():
    with pytest.raises(sconf.ConfigError, match="^stitching.settings: 'inter' needs at least two seeds"):
        sconf.validate(_with("seeds", [0]))


def test_digits_split_sizes_match_the_data():
    from stitchlib import data

    assert [len(data.load("digits", split)) for split in ("train", "test")] == [sconf.DIGITS_TRAIN_SIZE,
                                                                              sconf.DIGITS_TEST_SIZE]


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
