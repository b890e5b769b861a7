# Per session: the derivative folder (labels, localization mask, measures record).


rule measure:
    """DN labels into the output dataset and per-side measures (dnqsm.measure) as one JSON record."""
    input:
        preprocessed=preproc_folder(),
        batch=lambda wc: batch_folder(METHOD, BATCH_OF[(wc.subject, wildcard_session(wc))]),
    output:
        folder=directory(session_folder("anat")),
    params:
        erosion_voxels=config["measure"]["erosion_voxels"],
        checks=config["confidence"],
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    group:
        "session"
    benchmark:
        benchmark_path("measure")
    log:
        log_path("measure"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/measure.py"
