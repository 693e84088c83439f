"""Command line: ``stitchlib inspect FILE.h5`` and ``stitchlib check-config CONFIG.yaml``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stitchlib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("inspect", help="list an activation file's layers, shapes, dtypes and provenance")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("check-config", help="validate a workflow config and print it with defaults filled in")
    p.add_argument("config")
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

    from stitchlib import config

    try:
        print(yaml.safe_dump(config.load(args.config), sort_keys=False))
    except config.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
