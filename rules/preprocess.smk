# Per batch: validate each session's image, settle its unit, convert to ppb (dnqsm.workflow.preprocess).


rule preprocess:
    """Validate every QSM image of a batch and convert it to ppb; a bad image is that session's
    recorded failure, not the batch's."""
    input:
        # an unreadable path (a symlink to a missing file) is its session's failure, recorded by the
        # script, not a MissingInputException that stops the cohort: it is then no Snakemake input
        images=lambda wc: [path for s in BATCHES[wc.batch] for path in readable_or_nothing(s.image)],
    output:
        folder=directory(preproc_folder()),
    log:
        log_path("preprocess"),
    benchmark:
        benchmark_path("preprocess")
    group:
        "preprocess"
    conda:
        "../envs/dnqsm.yaml"
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    params:
        sessions=lambda wc: [(str(s.image), session_name(s)) for s in BATCHES[wc.batch]],
        unit_policy=config["units"]["input"],
        allow_unknown_orientation=config["orientation"]["allow_unknown"],
    script:
        "../scripts/preprocess.py"
