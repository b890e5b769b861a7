# Batches of sessions: localization and segmentation with both nnU-Net models loaded once per job.


# {method} is nnunet (dnqsm.segment: localize, crop and segment with both models loaded once) or
# atlas (dnqsm.atlas: the registration baseline, atlases loaded once); config `method` picks the one
# the cohort's derivatives use, the comparison target runs both.
ENGINE_SETTINGS = {"nnunet": config["inference"], "atlas": config["atlas"]}


rule segment:
    """Segment every session of a batch with one method; nnU-Net jobs ask for a GPU when
    inference.device is cuda."""
    input:
        preprocessed=lambda wc: [preproc_folder(s.subject, s.session) for s in BATCHES[wc.batch]],
        models=lambda wc: engine_files(wc.method),
    output:
        folder=directory(batch_folder()),
    params:
        models_dir=config["models"]["dir"],
        device=config["inference"]["device"],
        folds=config["inference"]["folds"],
        mirroring=config["inference"]["mirroring"],
        atlas=lambda wc: config["atlas"] if wc.method == "atlas" else None,
        atlas_pairs=lambda wc: [list(pair) for pair in atlas_files()] if wc.method == "atlas" else None,
        units=config["units"]["input"],
    threads: lambda wc: ENGINE_SETTINGS[wc.method]["threads"]
    resources:
        mem_mb=lambda wc: ENGINE_SETTINGS[wc.method]["mem_mb"],
        runtime=lambda wc: ENGINE_SETTINGS[wc.method]["runtime_min"],
        gpu=lambda wc: 1 if wc.method == "nnunet" and config["inference"]["device"] == "cuda" else 0,
    benchmark:
        str(WORK_DIR / "benchmarks" / "segment" / "{method}" / "batch-{batch}.tsv")
    log:
        str(WORK_DIR / "logs" / "segment" / "{method}" / "batch-{batch}.log"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/segment.py"
