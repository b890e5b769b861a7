"""Snakemake entry point: train one fold of one model with nnU-Net's nnUNetTrainer."""

import shutil
import time
from pathlib import Path

from dnqsm.engine.nnunet import use_workdir


def main() -> None:
    snakemake = globals()["snakemake"]
    train, model, fold = snakemake.params.train, snakemake.wildcards.model, snakemake.wildcards.fold
    use_workdir(Path(train["work_dir"]) / "nnunet")
    import torch

    from dnqsm.engine.nnunet import train as train_fold
    from dnqsm.engine.nnunet import validation_dice
    from dnqsm.io import script_log, write_json

    with script_log(snakemake.log[0]):
        torch.set_num_threads(snakemake.threads)
        spec = train[model]
        start = time.perf_counter()
        fold_dir = train_fold(
            spec["dataset_id"],
            fold if fold == "all" else int(fold),
            spec["epochs"],
            spec["iterations"],
            spec["val_iterations"],
            device=train["device"],
            init_from=spec.get("init_from"),
            initial_lr=spec.get("initial_lr"),
        )
        seconds = time.perf_counter() - start
        out = Path(snakemake.output.checkpoint)
        write_json(
            out.parent / "training.json",
            {
                "fold": fold,
                "seconds": round(seconds, 1),
                "nnunet_fold_dir": str(fold_dir),
                "validation_dice": validation_dice(fold_dir),
                "device": train["device"],
                "init_from": spec.get("init_from"),
                "initial_lr": spec.get("initial_lr"),
            },
        )
        shutil.copyfile(fold_dir / "checkpoint_final.pth", out)


# nnU-Net starts worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
