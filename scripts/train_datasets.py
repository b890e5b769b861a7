"""Snakemake entry point: nnU-Net raw datasets for both models (see dnqsm.training.datasets)."""

from dnqsm.io import script_log, write_json
from dnqsm.training.datasets import build_training_datasets


def main() -> None:
    snakemake = globals()["snakemake"]
    with script_log(snakemake.log[0]):
        train = snakemake.params.train
        summary = build_training_datasets(
            train["bids_dir"],
            train["labels_dir"],
            snakemake.output.localization,
            snakemake.output.segmentation,
            spacing_mm=train["localization"]["spacing_mm"],
            margin_mm=train["segmentation"]["margin_mm"],
            jitter_mm=train["segmentation"]["jitter_mm"],
            seed=train["seed"],
            localization_target=train["localization"].get("target", "dn_region"),
        )
        write_json(snakemake.output.summary, summary)
        print(f"{len(summary['cases'])} cases, {len(summary['skipped'])} skipped")


# nnU-Net starts worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
