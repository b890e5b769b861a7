# The cohort: one table of every session, the failures, and the derivative dataset's metadata.


rule cohort_table:
    """Cohort table (TSV + JSON sidecar) with measures and visit metadata; failures.tsv."""
    input:
        anat=for_all_sessions(lambda subject, session: session_folder("anat", subject, session)),
        metadata=[str(p) for p in [BIDS_DIR / "participants.tsv", *BIDS_DIR.glob("sub-*/sub-*_sessions.tsv")]
                  if p.exists()],
    output:
        table=report(cohort_path("desc-dentate_measures.tsv"), caption="../report/cohort_table.rst",
                     category="Cohort"),
        sidecar=cohort_path("desc-dentate_measures.json"),
        failures=report(cohort_path("failures.tsv"), caption="../report/failures.rst", category="Cohort"),
    params:
        bids_dir=str(BIDS_DIR),
    log:
        str(WORK_DIR / "logs" / "cohort_table.log"),
    script:
        "../scripts/cohort_table.py"


rule dataset_description:
    """dataset_description.json (GeneratedBy: version, git commit, model checksums, parameters) and
    the dseg.tsv look-up table of the label images."""
    input:
        models=MODEL_FILES,
    output:
        description=str(OUTPUT_DIR / "dataset_description.json"),
        lut=str(OUTPUT_DIR / "desc-dentate_dseg.tsv"),
    params:
        bids_dir=str(BIDS_DIR),
        commit=git_commit(workflow.basedir),
        parameters={key: config[key] for key in ("models", "inference", "units", "measure")},
    log:
        str(WORK_DIR / "logs" / "dataset_description.log"),
    script:
        "../scripts/dataset_description.py"
