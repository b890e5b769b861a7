"""Snakemake entry point: one subject's visits in the longitudinal mode (dnqsm.engine.longitudinal)."""

from dnqsm.engine.longitudinal import longitudinal_subject, visit_years
from dnqsm.io import script_log

snakemake = globals()["snakemake"]
p = snakemake.params
with script_log(snakemake.log[0]):
    years = visit_years(p.bids_dir, snakemake.wildcards.subject, p.sessions)
    print(f"years since the first visit: {years}")
    metas = longitudinal_subject(
        [tuple(v) for v in p.visits], snakemake.output.folder, p.settings, p.checks, years=years
    )
    for (_, stem), meta in zip(p.visits, metas):
        mode = (meta.get("longitudinal") or {}).get("mode", "not segmented")
        print(f"{stem}: {meta['status']} ({mode})")
