# Agreement with manual labels (target: validation), for cohorts that carry them.


rule validation:
    """Dice, HD95, volume and chi differences per session; Dice, ICC, r and Bland-Altman per cohort,
    site and group (dnqsm.validate)."""
    input:
        table=cohort_path("desc-dentate_measures.tsv"),
        anat=[session_folder("anat", s.subject, s.session or "") for s in LABELLED],
        preprocessed=[preproc_folder(s.subject, s.session or "") for s in LABELLED],
        labels=[str(manual_labels(s)) for s in LABELLED],
    output:
        sessions=validation_path("desc-agreement_sessions.tsv"),
        summary=report(validation_path("desc-agreement_summary.tsv"), caption="../report/validation.rst",
                       category="Validation"),
        bland_altman=report(validation_path("bland_altman.png"), caption="../report/validation.rst",
                            category="Validation"),
    params:
        method=METHOD,
    log:
        str(WORK_DIR / "logs" / "validation.log"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/validate.py"
