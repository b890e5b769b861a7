# Per session: the QC snapshot PNG, collected by `snakemake --report`.


rule qc_snapshot:
    """Each DN in three views with label contours, and the localization box on the whole image."""
    input:
        preprocessed=preproc_folder(),
        anat=session_folder("anat"),
    output:
        png=report(
            derivative("qc", ".png", "figures", desc="dentate"),
            caption="../report/qc_snapshot.rst",
            category="QC snapshots",
            labels={"subject": "sub-{subject}", "session": "ses-{session}" if HAS_SESSIONS else "-"},
        ),
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    group:
        "session"
    benchmark:
        benchmark_path("qc_snapshot")
    log:
        log_path("qc_snapshot"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/qc_snapshot.py"
