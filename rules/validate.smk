# Agreement with manual labels (target: validation), for cohorts that carry them.


rule validation:
    """Dice, HD95, volume and chi differences per session; Dice, ICC, r and Bland-Altman per cohort,
    site and group (dnqsm.validate)."""
    input:
        table=cohort_path("desc-dentate_measures.tsv"),
        anat=lambda wc: [session_folder("anat", s.subject, s.session or "") for s in labelled()],
        preprocessed=lambda wc: [preproc_folder(s.subject, s.session or "") for s in labelled()],
        labels=lambda wc: [str(manual_labels(s)) for s in labelled()],
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


rule comparison:
    """The paper's comparison on the labelled sessions: the nnU-Net method against the atlas baseline
    (both run whatever config 'method' says), Dice, paired p, volume ICC and r, time per session."""
    input:
        preprocessed=lambda wc: [preproc_folder(s.subject, s.session or "") for s in labelled()],
        labels=lambda wc: [str(manual_labels(s)) for s in labelled()],
        batches=lambda wc: [batch for method in METHODS for batch in labelled_batches(method)],
    output:
        sessions=validation_path("desc-comparison_sessions.tsv"),
        table=report(validation_path("desc-comparison_table.tsv"), caption="../report/comparison.rst",
                     category="Validation"),
        markdown=validation_path("desc-comparison_table.md"),
        figure=report(validation_path("comparison_dice.png"), caption="../report/comparison.rst",
                      category="Validation"),
    params:
        sessions=lambda wc: [(s.subject, s.session) for s in labelled()],
        batches=lambda wc: [{method: batch_folder(method, BATCH_OF[(s.subject, s.session)]) for method in METHODS}
                            for s in labelled()],
        bids_dir=str(BIDS_DIR),
    log:
        str(WORK_DIR / "logs" / "comparison.log"),
    conda:
        "../envs/dnqsm.yaml"
    script:
        "../scripts/compare_methods.py"
