"""Command line: ``stitchlib inspect FILE.h5`` and ``stitchlib check-config CONFIG.yaml``."""

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


if __name__ == "__main__":
    sys.exit(main())
