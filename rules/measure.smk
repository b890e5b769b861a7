# Per batch: each session's derivative folders (labels, localization mask, measures record, QC
# snapshot), written in a batch folder and published into the output dataset.


rule measure:
    """DN labels, per-side measures (dnqsm.analysis.measure) and the QC snapshot of every session of a batch;
    each session's anat and figures folders are then published into the output dataset."""
    input:
        preprocessed=preproc_folder(),
        batch=batch_folder(METHOD),
        longitudinal=lambda wc: (
            sorted({longitudinal_folder(s.subject) for s in BATCHES[wc.batch]}) if LONGITUDINAL["enabled"] else []
        ),
    output:
        folder=report(
            directory(measure_folder()),
            patterns=["{name}" + names.derivative_ending("snapshot")],
            caption="../report/qc_snapshot.rst",
            category="QC snapshots",
        ),
    log:
        log_path("measure"),
    benchmark:
        benchmark_path("measure")
    group:
        "measure"
    conda:
        "../envs/dnqsm.yaml"
    resources:
        mem_mb=config["resources"]["mem_mb"],
        runtime=config["resources"]["runtime_min"],
    params:
        sessions=lambda wc: batch_sessions(wc.batch),
        output_dir=str(OUTPUT_DIR),
        erosion_voxels=config["measure"]["erosion_voxels"],
        checks=config["confidence"],
    script:
        "../scripts/measure.py"
