"""Command line: ``stitchlib inspect FILE.h5``, ``stitchlib check-config CONFIG.yaml``, ``stitchlib plan CONFIG``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stitchlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="list an activation file's layers, shapes, dtypes and provenance")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("check-config", help="validate a workflow config and print it with defaults filled in",
                       description="Validate a workflow config as the workflow does before any job, then build "
                       "every network and OOD detector it names (torch: what the torch-free check cannot know, "
                       "e.g. a custom factory's kwargs), and print the config with every default filled in.")
    p.add_argument("config")
    p.add_argument("--untrusted", action="store_true",
                   help="treat the config as untrusted (as STITCHLIB_UNTRUSTED=1): refuse YTE templates and "
                        "factories outside the allow-list (README: Trust model)")
    p.add_argument("--no-build", action="store_true", help="skip building the networks and detectors")
    p = sub.add_parser("plan", help="per rule: jobs, estimated peak memory per job, what it writes, total disk")
    p.add_argument("config")
    p.add_argument("--profile", help="a Snakemake profile folder whose set-resources mem_mb override the rules' own "
                                     "requests (e.g. profiles/slurm)")
    p.add_argument("--max-mem-gb", type=float, help="also flag jobs whose estimate exceeds this (a node's memory)")
    p.add_argument("--no-data", action="store_true", help="plan without the datasets present (skips the check that "
                                                          "dataset roots and outlier files exist)")
    args = parser.parse_args(argv)

    if args.command == "inspect":
        from stitchlib import io

        status = 0
        for f in args.files:
            try:
                print(io.describe(f))
            except (OSError, ValueError) as e:
                print(f"error: {e}", file=sys.stderr)
                status = 1
        return status

    import yaml

    from stitchlib import catalog, config

    if args.command == "plan":
        try:
            return _plan(args)
        except config.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    if args.untrusted:
        os.environ[catalog.UNTRUSTED_ENV] = "1"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", config.ConfigWarning)
            cfg = config.load(args.config)
            if not args.no_build:
                from stitchlib import pipeline

                pipeline.check_buildable(cfg)
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(yaml.safe_dump(cfg, sort_keys=False))
    return 0


def plan_config(path: str, no_data: bool = False) -> dict:
    """The validated config of ``path``; ``no_data``: as if its datasets and outlier file were present (their
    sizes are the catalog's), to plan a run before the data is on disk."""
    from pathlib import Path

    import yaml

    from stitchlib import config

    if not no_data:
        return config.load(path)
    raw = yaml.safe_load(Path(path).read_text())
    for d in (raw.get("datasets") or {}).values():
        if isinstance(d, dict):
            d["download"] = True  # the dataset check accepts a root that does not exist yet
    if isinstance(raw.get("ood"), dict) and (raw["ood"].get("outliers") or {}).get("source") == "npy":
        raw["ood"]["outliers"]["source"] = "sample_photos"  # the same sizes, no file needed
    return config.validate(raw)


def _plan(args) -> int:
    """Print the footprint; exit status 2 when an estimate exceeds what its rule gets."""
    from pathlib import Path

    import yaml

    from stitchlib import footprint

    cfg = plan_config(args.config, args.no_data)
    requested = {}
    if args.profile:
        prof = yaml.safe_load((Path(args.profile) / "config.yaml").read_text()) or {}
        requested = {rule: r["mem_mb"] for rule, r in (prof.get("set-resources") or {}).items() if "mem_mb" in r}
    text, flagged = footprint.report(cfg, requested, args.max_mem_gb)
    print(text)
    if flagged:
        print(f"\n{len(flagged)} rule(s) need more memory than they get: {', '.join(flagged)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
