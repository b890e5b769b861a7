"""Snakemake entry point: nnU-Net planning (small custom plans) and preprocessing of one model."""

import shutil
from pathlib import Path

from dnqsm.engine.nnunet import use_workdir


def main() -> None:
    snakemake = globals()["snakemake"]
    train, model = snakemake.params.train, snakemake.wildcards.model
    use_workdir(Path(train["work_dir"]) / "nnunet")
    from dnqsm.engine.nnunet import plan_and_preprocess  # nnU-Net reads its folders at import
    from dnqsm.io import script_log

    with script_log(snakemake.log[0]):
        spec = train[model]
        plans = plan_and_preprocess(
            spec["dataset_id"],
            spec["features"],
            spec["patch_size"],
            spec["batch_size"],
            spec.get("spacing_mm_xyz"),
            processes=snakemake.threads,
            init_from=spec.get("init_from"),
        )
        shutil.copyfile(plans, snakemake.output.plans)


# nnU-Net starts worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
