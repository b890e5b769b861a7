"""Snakemake entry point: nnU-Net planning (small custom plans) and preprocessing of one model."""

import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from dnqsm.nnunet import use_workdir


def main() -> None:
    snakemake = globals()["snakemake"]
    train, model = snakemake.params.train, snakemake.wildcards.model
    use_workdir(Path(train["work_dir"]) / "nnunet")
    from dnqsm.nnunet import plan_and_preprocess  # nnU-Net reads its folders at import

    with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
        spec = train[model]
        plans = plan_and_preprocess(spec["dataset_id"], spec["features"], spec["patch_size"], spec["batch_size"],
                                    spec.get("spacing_mm_xyz"), processes=snakemake.threads)
        shutil.copyfile(plans, snakemake.output.plans)


# nnU-Net starts worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
