# Batches of sessions: localization and segmentation with both nnU-Net models loaded once per job.


# Two rules, one per method, write the same batch layout (work_dir/segment/<method>/batch-NNN) with the
# same script; config `method` picks the one the cohort's derivatives use, the comparison target runs
# both. They are separate rules so that a cluster profile gives GPUs to nnU-Net jobs only.


rule segment:
    """nnU-Net: localize, crop and segment every session of a batch with both models loaded once
    (dnqsm.engine.segment); asks for a GPU when inference.device is cuda."""
    input:
        preprocessed=preproc_folder(),
        models=MODEL_FILES,
    output:
        folder=directory(batch_folder("nnunet")),
    log:
        log_path("segment/nnunet"),
    benchmark:
        benchmark_path("segment/nnunet")
    conda:
        "../envs/dnqsm.yaml"
    threads: config["inference"]["threads"]
    resources:
        mem_mb=config["inference"]["mem_mb"],
        runtime=config["inference"]["runtime_min"],
        gpu=1 if config["inference"]["device"] == "cuda" else 0,
    params:
        method="nnunet",
        sessions=lambda wc: [preproc_session(s) for s in BATCHES[wc.batch]],
        models_dir=config["models"]["dir"],
        device=config["inference"]["device"],
        folds=config["inference"]["folds"],
        mirroring=config["inference"]["mirroring"],
    script:
        "../scripts/segment.py"


rule segment_atlas:
    """The registration baseline: every session of a batch against the atlases, loaded once
    (dnqsm.engine.atlas); CPU only."""
    input:
        preprocessed=preproc_folder(),
        atlases=lambda wc: method_files("atlas"),
    output:
        folder=directory(batch_folder("atlas")),
    log:
        log_path("segment/atlas"),
    benchmark:
        benchmark_path("segment/atlas")
    conda:
        "../envs/dnqsm.yaml"
    threads: config["atlas"]["threads"]
    resources:
        mem_mb=config["atlas"]["mem_mb"],
        runtime=config["atlas"]["runtime_min"],
    params:
        method="atlas",
        sessions=lambda wc: [preproc_session(s) for s in BATCHES[wc.batch]],
        atlas=config["atlas"],
        atlas_pairs=lambda wc: [list(pair) for pair in atlas_files()],
    script:
        "../scripts/segment.py"
