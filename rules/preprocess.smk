# Per session: validate the image, settle its unit, convert to ppb (dnqsm.preprocess).


rule preprocess:
    """Validate one session's QSM image and convert it to ppb; a bad image is recorded, not fatal."""
    input:
        # an unreadable path (a symlink to a missing file) is this session's failure, recorded by the
        # script, not a MissingInputException that stops the cohort: it is then no Snakemake input
        image=lambda wc: readable_or_nothing(RAW_IMAGE[(wc.subject, wildcard_session(wc))]),
    output:
        folder=directory(preproc_folder()),
    params:
        image=lambda wc: str(RAW_IMAGE[(wc.subject, wildcard_session(wc))]),
        unit_policy=config["units"]["input"],
        allow_unknown_orientation=config["orientation"]["allow_unknown"],
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    group:
        "preprocess"
    benchmark:
        benchmark_path("preprocess")
    log:
        log_path("preprocess"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/preprocess.py"
