# Agreement with manual labels (target: validation), for cohorts that carry them.


rule validation:
    """Dice, HD95, volume and chi differences per session; Dice, ICC, r and Bland-Altman per cohort,
    site and group (dnqsm.analysis.agreement)."""
    input:
        table=cohort_path("measures"),
        derivatives=lambda wc: labelled_batches(measure_folder),
        preprocessed=lambda wc: labelled_batches(preproc_folder),
        labels=lambda wc: [str(manual_labels(s)) for s in labelled()],
    output:
        sessions=validation_path("desc-agreement_sessions.tsv"),
        summary=report(
            validation_path("desc-agreement_summary.tsv"), caption="../report/validation.rst", category="Validation"
        ),
        bland_altman=report(
            validation_path("bland_altman.png"), caption="../report/validation.rst", category="Validation"
        ),
    log:
        log_path("validation", None),
    conda:
        "../envs/dnqsm.yaml"
    params:
        measures=lambda wc: [measures_record(s) for s in labelled()],
        dseg=lambda wc: [dentate_dseg(s) for s in labelled()],
        preprocessed=lambda wc: [preproc_session(s) for s in labelled()],
        method=METHOD,
    script:
        "../scripts/agreement.py"


rule comparison:
    """The paper's comparison on the labelled sessions: the nnU-Net method against the atlas baseline
    (both run whatever config 'method' says), Dice, paired p, volume ICC and r, time per session."""
    input:
        preprocessed=lambda wc: labelled_batches(preproc_folder),
        labels=lambda wc: [str(manual_labels(s)) for s in labelled()],
        batches=lambda wc: [
            batch for method in METHODS for batch in labelled_batches(lambda b: batch_folder(method, b))
        ],
    output:
        sessions=validation_path("desc-comparison_sessions.tsv"),
        table=report(
            validation_path("desc-comparison_table.tsv"), caption="../report/comparison.rst", category="Validation"
        ),
        markdown=validation_path("desc-comparison_table.md"),
        figure=report(validation_path("comparison_dice.png"), caption="../report/comparison.rst", category="Validation"),
    log:
        log_path("comparison", None),
    conda:
        "../envs/dnqsm.yaml"
    params:
        sessions=lambda wc: [(s.subject, s.session) for s in labelled()],
        preprocessed=lambda wc: [preproc_session(s) for s in labelled()],
        batches=lambda wc: [{method: batch_folder(method, BATCH_OF[s.key]) for method in METHODS} for s in labelled()],
        bids_dir=str(BIDS_DIR),
    script:
        "../scripts/compare_methods.py"
