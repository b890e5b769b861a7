"""Snakemake entry point: export one trained model as an nnU-Net zip, with its sha256."""

import json
import shutil
from pathlib import Path

from dnqsm.engine.nnunet import use_workdir


def main() -> None:
    snakemake = globals()["snakemake"]
    train, model = snakemake.params.train, snakemake.wildcards.model
    use_workdir(Path(train["work_dir"]) / "nnunet")
    from dnqsm.engine.nnunet import export_zip
    from dnqsm.io import script_log, write_json

    with script_log(snakemake.log[0]):
        spec = train[model]
        if spec.get("keep"):  # carried over unchanged from an earlier stage (train_provenance links its record)
            from dnqsm.engine.nnunet import sha256
            from dnqsm.io import atomic_path

            with atomic_path(snakemake.output.zip) as tmp:
                shutil.copyfile(spec["keep"], tmp)
            write_json(
                snakemake.output.record,
                {
                    "model": model,
                    "zip": Path(snakemake.output.zip).name,
                    "sha256": sha256(snakemake.output.zip),
                    "training": [],
                },
            )
            return
        from dnqsm.training.provenance import check_validation

        runs = [json.loads((Path(c).parent / "training.json").read_text()) for c in snakemake.input.checkpoints]
        check_validation(model, runs, train["min_validation_dice"])
        folds = [f if f == "all" else int(f) for f in spec["folds"]]
        digest = export_zip(spec["dataset_id"], folds, snakemake.output.zip)
        write_json(
            snakemake.output.record,
            {
                "model": model,
                "zip": Path(snakemake.output.zip).name,
                "sha256": digest,
                "dataset_id": spec["dataset_id"],
                "folds": folds,
                "training": runs,
            },
        )


# nnU-Net starts worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
