"""Snakemake entry point: segment one batch of sessions with one method, its models or atlases loaded once."""

import os

from dnqsm.io import script_log


def engine(method: str, p, threads: int):
    """The batch's segmenter: nnU-Net (dnqsm.engine.segment) or the atlas baseline (dnqsm.engine.atlas)."""
    if method == "atlas":
        from dnqsm.engine.atlas import DEFAULTS, AtlasMethod, load_atlases

        settings = {key: value for key, value in p.atlas.items() if key in DEFAULTS}
        print(f"loading {len(p.atlas_pairs)} atlases")
        # atlases settle their own unit (sidecar, else values): a cohort's forced unit is about its images
        return AtlasMethod(load_atlases(p.atlas_pairs, "auto", settings), settings, threads=threads)
    from dnqsm.engine.segment import NnunetMethod, load_model_set

    print(f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '')}; requested device: {p.device}")
    segmenter = NnunetMethod(
        load_model_set(p.models_dir),
        p.device,
        folds=tuple(p.folds) if p.folds else None,
        mirroring=p.mirroring,
        threads=threads,
    )
    print(f"device used: {segmenter.device}")
    return segmenter


def main() -> None:
    snakemake = globals()["snakemake"]
    from dnqsm.workflow.pipeline import segment_batch

    with script_log(snakemake.log[0]):
        segmenter = engine(snakemake.params.method, snakemake.params, snakemake.threads)
        for record in segment_batch(list(snakemake.params.sessions), snakemake.output.folder, segmenter):
            print(f"{record['input']}: {record['status']}" + (f" ({record['error']})" if record["error"] else ""))


# nnU-Net may start worker processes with "spawn", which re-imports this file: guard the work.
if __name__ == "__main__":
    main()
