"""The command line that runs the workflow on a folder (``snakemake -s Snakefile --directory DIR
--configfile DIR/config.yaml --cores N ...``), as the tests and benchmarks start it."""

from __future__ import annotations

import sys
from pathlib import Path

SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"


def snakemake_command(
    directory: str | Path, *args: str, cores: int = 2, configfile: str | Path | None = None, snakefile: Path = SNAKEFILE
) -> list[str]:
    """``python -m snakemake`` on ``directory`` with its ``config.yaml`` (or ``configfile``), then ``args``."""
    directory = Path(directory)
    config = Path(configfile) if configfile is not None else directory / "config.yaml"
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(directory),
            "--configfile", str(config), "--cores", str(cores), *args]  # fmt: skip
