rule synth_cohort:
    """Generate a synthetic BIDS QSM cohort with ground truth (dnqsm synth)."""
    output:
        description=synth_dataset_description(),
    log:
        log_path("synth_cohort", None, "results"),
    conda:
        "../envs/dnqsm.yaml"
    threads: 2
    params:
        out=lambda wildcards, output: str(Path(output.description).parent),
        preset=config["synth"]["preset"],
        subjects=config["synth"]["subjects"],
        sessions=config["synth"]["sessions"],
        seed=config["synth"]["seed"],
        generator=synth_generator,  # another generator: Snakemake's params trigger makes the cohort again
    script:
        "../scripts/synth_cohort.py"
