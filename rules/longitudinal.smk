# Longitudinal mode (config longitudinal.enabled): per subject, every visit relabelled with a prior
# from an unbiased subject template (dnqsm.engine.longitudinal). A visit added later changes its subject's
# inputs, so that subject's job (and only it) reruns with the new template.


rule longitudinal:
    """One subject's visits: rigid alignment to a subject template built from all of them alike, the
    segmentation network's probabilities averaged there into a prior, each visit relabelled from its
    own probabilities and the prior."""
    input:
        batches=lambda wc: sorted({batch_folder(METHOD, BATCH_OF[s.key]) for s in BATCHES.by_subject[wc.subject]}),
        sessions_tsv=lambda wc: [
            p for p in [BIDS_DIR / f"sub-{wc.subject}" / f"sub-{wc.subject}_sessions.tsv"] if p.exists()
        ],
    output:
        folder=directory(longitudinal_folder()),
    log:
        log_path("longitudinal", "sub-{subject}"),
    benchmark:
        benchmark_path("longitudinal", "sub-{subject}")
    conda:
        "../envs/dnqsm.yaml"
    threads: LONGITUDINAL["threads"]
    resources:
        mem_mb=LONGITUDINAL["mem_mb"],
        runtime=LONGITUDINAL["runtime_min"],
    params:
        visits=lambda wc: [
            (batch_folder(METHOD, BATCH_OF[s.key]), result_stem(s)) for s in BATCHES.by_subject[wc.subject]
        ],
        settings={
            key: value
            for key, value in LONGITUDINAL.items()
            if key in ("prior_weight", "iterations", "template_spacing_mm", "registration_spacing_mm")
        },
        checks=config["confidence"],
        bids_dir=str(BIDS_DIR),
        sessions=lambda wc: [s.session for s in BATCHES.by_subject[wc.subject]],
    script:
        "../scripts/longitudinal.py"
