# Training the two nnU-Net models (target: train_models). Input: any labelled BIDS cohort.


wildcard_constraints:
    model="localization|segmentation",
    fold=r"\d|all",


try:  # one labelled cohort, or several pooled (train.bids_dir and train.labels_dir as lists)
    TRAIN_COHORTS = training_cohorts(config["train"]["bids_dir"], config["train"]["labels_dir"])
except ValueError as exc:
    raise WorkflowError(f"config train: {exc}") from None


rule train_datasets:
    """nnU-Net raw datasets for both models from a labelled BIDS cohort (dnqsm.training.datasets)."""
    input:
        descriptions=[str(bids / "dataset_description.json") for bids, _ in TRAIN_COHORTS],
    output:
        localization=directory(nnunet_raw("localization")),
        segmentation=directory(nnunet_raw("segmentation")),
        summary=train_path("datasets.json"),
    log:
        log_path("train_datasets", None, train_path()),
    conda:
        "../envs/dnqsm.yaml"
    params:
        train=config["train"],
    script:
        "../scripts/train_datasets.py"


rule train_preprocess:
    """nnU-Net fingerprint, planner (then small custom plans) and preprocessing for one model."""
    input:
        raw=lambda wc: nnunet_raw(wc.model),
        # fine-tuning keeps the source model's axis order and target spacing (dnqsm.engine.nnunet.keep_source_geometry)
        init_from=train_init_from,
    output:
        plans=train_path("preprocessed/{model}.plans.json"),
    log:
        log_path("train_preprocess_{model}", None, train_path()),
    conda:
        "../envs/dnqsm.yaml"
    threads: config["train"]["threads"]
    params:
        train=config["train"],
    script:
        "../scripts/train_preprocess.py"


rule train_fold:
    """Train one fold with nnU-Net's nnUNetTrainer; asks for a GPU when train.device is cuda."""
    input:
        plans=train_path("preprocessed/{model}.plans.json"),
        # fine-tuning from a zip (e.g. the first stage of make demo-models): a new zip retrains
        init_from=train_init_from,
    output:
        checkpoint=train_path("results/{model}/fold_{fold}/checkpoint_final.pth"),
    log:
        log_path("train_fold_{model}_{fold}", None, train_path()),
    conda:
        "../envs/dnqsm.yaml"
    threads: config["train"]["threads"]
    resources:
        gpu=1 if config["train"]["device"] == "cuda" else 0,
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime_min"],
    params:
        train=config["train"],
    script:
        "../scripts/train_fold.py"


rule train_export:
    """Export a trained model in nnU-Net's zip format and record its sha256 (or carry over train.<model>.keep)."""
    input:
        checkpoints=lambda wc: (
            []
            if config["train"][wc.model].get("keep")
            else expand(
                train_path("results/{model}/fold_{fold}/checkpoint_final.pth"),
                model=wc.model,
                fold=config["train"][wc.model]["folds"],
            )
        ),
        kept=lambda wc: config["train"][wc.model].get("keep") or [],
    output:
        zip=models_path("{model}.zip"),
        record=models_path("{model}.json"),
    log:
        log_path("train_export_{model}", None, train_path()),
    conda:
        "../envs/dnqsm.yaml"
    params:
        train=config["train"],
    script:
        "../scripts/train_export.py"


rule train_models:
    """Both models and their provenance file."""
    input:
        records=expand(models_path("{model}.json"), model=("localization", "segmentation")),
        datasets=train_path("datasets.json"),
    output:
        provenance=models_path("provenance.json"),
    log:
        log_path("train_provenance", None, train_path()),
    conda:
        "../envs/dnqsm.yaml"
    params:
        train=config["train"],
    script:
        "../scripts/train_provenance.py"
