"""Snakemake entry point: segment one batch of sessions with both models loaded once."""

import os

from dnqsm.io import script_log


def main() -> None:
    snakemake = globals()["snakemake"]
    from dnqsm.pipeline import segment_batch
    from dnqsm.segment import DentateSegmenter, load_model_set

    p = snakemake.params
    with script_log(snakemake.log[0]):
        print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}; requested device: {p.device}")
        segmenter = DentateSegmenter(load_model_set(p.models_dir), p.device, folds=tuple(p.folds) if p.folds else None,
                                     mirroring=p.mirroring, threads=snakemake.threads)
        print(f"device used: {segmenter.device}")
        for record in segment_batch(list(snakemake.input.preprocessed), snakemake.output.folder, segmenter):
            print(f"{record['input']}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))


# nnU-Net may start worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
