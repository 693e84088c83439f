"""Stand-in for your own training code: train the networks a config of your own networks names, and save
their state dicts where it expects them (README: "Compare your own networks").

    .venv/bin/python examples/train_own_networks.py configs/byo-example.yaml [--epochs 10]

For every architecture of family ``custom`` and every seed: ``factory(**kwargs)`` seeded, trained on the
config's dataset with Adam, saved with ``torch.save(model.state_dict(), state_dict)``. Any network saved that
way works; nothing here is needed by the workflow itself.
"""

import argparse
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # stitchlib from this checkout

from stitchlib import catalog, data, hooked, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = yaml.safe_load(Path(args.config).read_text())
    for dataset, d in cfg["datasets"].items():
        size = (d or {}).get("image_size") or catalog.dataset(dataset).image_size
        train_ds, test_ds = (data.load(dataset, split, root=(d or {}).get("root"), image_size=size)
                             for split in ("train", "test"))
        for arch, a in cfg["architectures"].items():
            if a["family"] != "custom":
                continue
            for seed in cfg["seeds"]:
                torch.manual_seed(seed)
                model = hooked.resolve_factory(a["params"]["factory"])(**a["params"].get("kwargs", {}))
                result = train.train_network(model, train_ds, test_ds, dict(optimizer="adam", lr=1e-3,
                                             weight_decay=1e-5, epochs=args.epochs, batch_size=64),
                                             seed=seed, device=torch.device("cpu"), progress=lambda s: None)
                path = Path(catalog.state_dict_file(a["params"], seed, dataset))
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save(model.state_dict(), path)
                print(f"{arch} seed {seed} on {dataset}: test accuracy {result['test_accuracy']:.3f} -> {path}")


if __name__ == "__main__":
    main()
