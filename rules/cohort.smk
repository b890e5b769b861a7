# The cohort: one table of every session, the failures, and the derivative dataset's metadata.


rule cohort_table:
    """Cohort table (TSV + JSON sidecar) with measures, status and visit metadata; failures.tsv and
    review.tsv (sessions whose segmentation a plausibility check doubts)."""
    input:
        derivatives=lambda wc: all_batches(measure_folder),
        metadata=lambda wc: [
            str(p) for p in [BIDS_DIR / "participants.tsv", *BIDS_DIR.glob("sub-*/sub-*_sessions.tsv")] if p.exists()
        ],
    output:
        table=report(cohort_path("measures"), caption="../report/cohort_table.rst", category="Cohort"),
        sidecar=cohort_path("measures_sidecar"),
        failures=report(cohort_path("failures"), caption="../report/failures.rst", category="Cohort"),
        review=report(cohort_path("review"), caption="../report/review.rst", category="Cohort"),
        problems=report(cohort_path("metadata_problems"), caption="../report/metadata_problems.rst", category="Cohort"),
    log:
        log_path("cohort_table", None),
    conda:
        "../envs/dnqsm.yaml"
    params:
        measures=lambda wc: [measures_record(s) for s in BATCHES.sessions],
        bids_dir=str(BIDS_DIR),
    script:
        "../scripts/cohort_table.py"


rule dataset_description:
    """dataset_description.json (GeneratedBy: version, the git commit that wrote it, model checksums,
    parameters) and the dseg.tsv look-up table of the label images."""
    input:
        models=method_files(METHOD),
    output:
        description=cohort_path("dataset_description"),
        lut=cohort_path("labels_lookup"),
    log:
        log_path("dataset_description", None),
    conda:
        "../envs/dnqsm.yaml"
    params:
        bids_dir=str(BIDS_DIR),
        workflow_dir=lambda wildcards: workflow.basedir,  # the code's git commit is read there
        parameters={
            key: config[key]
            for key in ("method", "units", "measure", *(("atlas",) if METHOD == "atlas" else ("models", "inference")))
        },
    script:
        "../scripts/dataset_description.py"


rule stats:
    """Longitudinal mixed models, annualised change, baseline differences, slopes, sample sizes and
    their figures, from the cohort table minus the sessions rated fail in QC (dnqsm.analysis.stats)."""
    input:
        table=cohort_path("measures"),
        ratings=RATINGS,
    output:
        tables=[stats_path(f"{name}.tsv") for name in STATS_TABLES],
        spaghetti=report(stats_path("spaghetti.png"), caption="../report/stats_spaghetti.rst", category="Statistics"),
        baseline=report(stats_path("baseline.png"), caption="../report/stats_baseline.rst", category="Statistics"),
        left_right=report(stats_path("left_right.png"), caption="../report/stats_left_right.rst", category="Statistics"),
        residuals=report(stats_path("residuals.png"), caption="../report/stats_residuals.rst", category="Statistics"),
    log:
        log_path("stats", None),
    benchmark:
        benchmark_path("stats", None)
    conda:
        "../envs/dnqsm.yaml"
    params:
        settings=config["stats"],
    script:
        "../scripts/stats.py"


rule qc_page:
    """The self-contained QC review page: every session's snapshot, measures and flags; ratings are
    kept in the browser and exported as qc_ratings.tsv (dnqsm.qc.page)."""
    input:
        table=cohort_path("measures"),
        derivatives=lambda wc: all_batches(measure_folder),
        ratings=RATINGS,
    output:
        page=cohort_path("qc_page"),
    log:
        log_path("qc_page", None),
    conda:
        "../envs/dnqsm.yaml"
    params:
        snapshots=snapshots,
    script:
        "../scripts/qc_page.py"
