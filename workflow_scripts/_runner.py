"""Shared glue for workflow scripts: log to the job's log file, bound torch threads, report errors."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # stitchlib from this checkout


def run(snakemake, job) -> None:
    """Call ``job(snakemake)`` with logging to ``snakemake.log[0]`` and ``snakemake.threads`` torch threads."""
    logging.basicConfig(filename=snakemake.log[0] if snakemake.log else None, level=logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
    except ImportError:
        pass
    log = logging.getLogger("stitchlib.job")
    log.info("rule %s, wildcards %s", snakemake.rule, dict(snakemake.wildcards))
    from stitchlib import io

    wildcards = ", ".join(f"{k}={v}" for k, v in dict(snakemake.wildcards).items())
    io.set_job(f"rule {snakemake.rule}" + (f" ({wildcards})" if wildcards else ""),
               snakemake.config.get("integrity", {}).get("hash_limit_mb"))
    try:
        job(snakemake)
    except Exception:
        log.exception("job failed")
        raise
    import resource

    log.info("done; peak memory %.0f MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB
