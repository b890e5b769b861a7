# Batches of sessions: localization and segmentation with both nnU-Net models loaded once per job.


rule segment:
    """Localize, crop and segment every session of a batch (dnqsm.segment); asks for a GPU when
    inference.device is cuda."""
    input:
        preprocessed=lambda wc: [preproc_folder(s.subject, s.session) for s in BATCHES[wc.batch]],
        models=MODEL_FILES,
    output:
        folder=directory(batch_folder()),
    params:
        models_dir=config["models"]["dir"],
        device=config["inference"]["device"],
        folds=config["inference"]["folds"],
        mirroring=config["inference"]["mirroring"],
    threads: config["inference"]["threads"]
    resources:
        mem_mb=config["inference"]["mem_mb"],
        runtime=config["inference"]["runtime_min"],
        gpu=1 if config["inference"]["device"] == "cuda" else 0,
    benchmark:
        str(WORK_DIR / "benchmarks" / "segment" / "batch-{batch}.tsv")
    log:
        str(WORK_DIR / "logs" / "segment" / "batch-{batch}.log"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/segment.py"
