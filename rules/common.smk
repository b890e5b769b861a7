# Configuration validation, cohort discovery (pybids) and the one place that builds workflow paths.
import functools
import os
from pathlib import Path

from snakemake.exceptions import WorkflowError

from dnqsm.workflow.batches import EMPTY as EMPTY_PLAN, plan_batches, read_plan
from dnqsm.workflow.bids import dentate_labels, select_sessions
from dnqsm.settings import ConfigError, check as check_config
from dnqsm.workflow.config import training_cohorts
from dnqsm.io import InputError, bids_path, check_writable, prefix
from dnqsm import names
from dnqsm.engine.nnunet import model_files

try:  # command-line values typed by the schema, its defaults set, one clear line for a problem (dnqsm.settings)
    check_config(config, Path(workflow.basedir) / "config" / "config.schema.yaml")
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

BIDS_DIR = Path(config["bids_dir"])
OUTPUT_DIR = Path(config["output_dir"])
WORK_DIR = Path(config["work_dir"])
try:  # before any work: an unwritable output is said at the start, in one line
    check_writable(OUTPUT_DIR, "output_dir")
    check_writable(WORK_DIR, "work_dir")
except InputError as exc:
    raise WorkflowError(str(exc)) from None


def synth_dataset_description():
    """dataset_description.json of the synthetic cohort named in config['synth']."""
    return str(Path(config["synth"]["out"]) / "dataset_description.json")


def synth_generator(wildcards):
    """The hash of the synthetic-cohort generator's source and shaping libraries (imported only when
    the cohort is in the plan): as a rule parameter, a new generator makes the cohort again."""
    from dnqsm.synth.dataset import generator_code

    return generator_code()


# --- the cohort: sessions, batches and derivative paths ---
# Discovered only when the BIDS directory exists, so that `snakemake synth_cohort` (which makes the
# demo cohort) and `snakemake train_models` work before there is a cohort to segment.
# The main process discovers the sessions and plans stable batches: a session keeps its batch across
# runs (dnqsm.workflow.batches; work_dir/batches.tsv), new ones get new batches. That manifest lists every
# session, so the jobs of the run (cluster jobs parse this file again) read it and never rediscover.
PLAN = WORK_DIR / "batches.tsv"
BATCH_SIZE = config["inference"]["batch_size"]
# a cluster job's plan turns a batch's manifest rows into sessions only when a rule asks for that batch
BATCHES = EMPTY_PLAN if workflow.is_main_process else read_plan(PLAN)
if not BATCHES:
    try:
        _found = (
            select_sessions(
                BIDS_DIR,
                config["participant_label"],
                config["exclude_participant_label"],
                config["exclude_sessions"],
                config["bids_filters"],
            )
            if BIDS_DIR.exists()
            else []
        )
    except ValueError as exc:  # a typo in a label or filter, an ambiguous session: one clear line
        raise WorkflowError(str(exc)) from None
    BATCHES = plan_batches(_found, PLAN, BATCH_SIZE, write=workflow.is_main_process) if _found else EMPTY_PLAN
HAS_SESSIONS = BATCHES.has_sessions
BATCH_OF = BATCHES.batch_of  # entry key -> batch
MODEL_FILES = [str(p) for p in model_files(config["models"]["dir"])]
METHOD = config["method"]
METHODS = ("nnunet", "atlas")
LONGITUDINAL = config["longitudinal"]  # every key set: the schema's defaults fill what a config leaves out
if LONGITUDINAL["enabled"] and METHOD != "nnunet":
    raise WorkflowError("longitudinal.enabled needs method: nnunet (the mode combines the network's probabilities)")


def _ses(session):
    """The session label; sessionless datasets have none."""
    return session if HAS_SESSIONS else None


def derivative(role, s, root=OUTPUT_DIR):
    """One entry's derivative of ``role`` (dnqsm.names.DERIVATIVES) in the output dataset, or under ``root``."""
    return str(names.derivative_path(root, s.subject, _ses(s.session), role, **s.kept))


def session_folder(datatype, subject="{subject}", session="{session}", root=OUTPUT_DIR):
    """A per-session folder of the output dataset (or ``root``), e.g. sub-01/ses-01/anat."""
    return str(bids_path(root, subject, _ses(session), "x", "", datatype).parent)


# --- batches: the unit of work of every per-session step (jobs scale with batches, not sessions) ---
def preproc_folder(batch="{batch}"):
    """Work folder of one batch's preprocessed images and records: a folder per session inside."""
    return str(WORK_DIR / "preprocess" / f"batch-{batch}")


def session_name(s):
    """An entry's folder name inside a batch folder: sub-<label>[_ses-<label>][_<entities>]."""
    return s.key


def preproc_session(s):
    """One entry's preprocessing folder (inside its batch's)."""
    return str(Path(preproc_folder(BATCH_OF[s.key])) / session_name(s))


def batch_folder(method="{method}", batch="{batch}"):
    """Work folder of one segmentation batch of one method."""
    return str(WORK_DIR / "segment" / method / f"batch-{batch}")


def longitudinal_folder(subject="{subject}"):
    """Work folder of one subject's longitudinal labels (the layout of a segmentation batch)."""
    return str(WORK_DIR / "longitudinal" / METHOD / f"sub-{subject}")


def result_stem(s):
    """The name of an entry's result in a segmentation batch folder (its preprocessed image's stem)."""
    return names.preproc_stem(session_name(s))


def labels_folder(s):
    """Where an entry's labels come from: its segmentation batch, or its subject's longitudinal folder."""
    return longitudinal_folder(s.subject) if LONGITUDINAL["enabled"] else batch_folder(METHOD, BATCH_OF[s.key])


def measure_folder(batch="{batch}"):
    """Work folder of one batch's derivatives (labels, measures, QC snapshots), laid out like the
    output dataset; each session's folders are published from here into output_dir."""
    return str(WORK_DIR / "derivatives" / f"batch-{batch}")


def measures_record(s, root=None):
    """One entry's measures record (JSON) in its batch's measure folder, or under ``root``."""
    return derivative("measures", s, measure_folder(BATCH_OF[s.key]) if root is None else root)


def dentate_dseg(s, root=None):
    """One entry's DN label image in its batch's measure folder, or under ``root``."""
    return derivative("dseg", s, measure_folder(BATCH_OF[s.key]) if root is None else root)


def batch_sessions(batch):
    """What the measure job needs per entry of a batch: labels, entities, its preprocessing folder and
    its derivative folders relative to a dataset root (the batch folder, then the output dataset)."""
    return [
        {
            "subject": s.subject,
            "session": _ses(s.session),
            "entities": s.kept,
            "name": session_name(s),
            "labels_dir": labels_folder(s),
            "anat": session_folder("anat", s.subject, s.session or "", ""),
        }
        for s in BATCHES[batch]
    ]


def all_batches(folder):
    """``folder(batch)`` for every batch (call inside input functions: cluster jobs never build it)."""
    return [folder(batch) for batch in BATCHES]


@functools.cache
def atlas_files():
    """(image, labels) of every configured atlas, found once; a clear error when there is none."""
    from dnqsm.engine.atlas import atlas_pairs  # imported only when the atlas method is used: jobs parse faster

    spec = config["atlas"]
    try:
        return atlas_pairs(spec["bids_dir"], spec["labels_dir"], spec["participant_label"], spec["files"])
    except (InputError, ValueError) as exc:
        raise WorkflowError(f"the atlas method needs labelled atlases (config atlas:): {exc}")


def method_files(method):
    """The files a method's labels depend on: the nnU-Net models, or the atlas images and labels."""
    if method == "atlas":
        return [str(path) for pair in atlas_files() for path in pair]
    return MODEL_FILES


def cohort_path(role):
    """A cohort-level file of the output dataset (dnqsm.names.COHORT_FILES)."""
    return str(names.cohort_file(OUTPUT_DIR, role))


def benchmark_path(step, job="batch-{batch}", root=None):
    """Snakemake benchmark record (wall time, peak memory) of a job of a step (one per batch by default;
    ``job`` None: a step of one job)."""
    return str(names.benchmark_file(WORK_DIR if root is None else root, step, job))


def log_path(step, job="batch-{batch}", root=None):
    """Log of a job of a step, laid out as benchmark_path."""
    return str(names.log_file(WORK_DIR if root is None else root, step, job))


def require_cohort(wildcards=None):
    """Fail with a clear message when there is nothing to segment."""
    if not BIDS_DIR.exists():
        raise WorkflowError(
            f"bids_dir {BIDS_DIR} does not exist: point config 'bids_dir' at a BIDS dataset "
            "(for the demo, run `snakemake synth_cohort` first, or `make demo`)"
        )
    if not BATCHES:
        raise WorkflowError(f"no _Chimap images selected in {BIDS_DIR} (check participant_label and exclusions)")
    return []


def wildcard_session(wildcards):
    return wildcards.get("session") if HAS_SESSIONS else None


STATS_TABLES = (
    "fixed_effects",
    "annual_change",
    "baseline_differences",
    "subject_slopes",
    "sample_size",
    "dropped_rows",
    "models",
)
STATS_FIGURES = ("spaghetti", "baseline", "left_right", "residuals")
RATINGS = [config["qc"]["ratings"]] if config["qc"]["ratings"] else []


def stats_path(name):
    """A file of the longitudinal statistics."""
    return str(OUTPUT_DIR / "stats" / name)


def snapshots(wildcards=None):
    """Every entry's QC snapshot in the output dataset (published by the measure jobs)."""
    return [derivative("snapshot", s) for s in BATCHES.sessions]


LABELS_DIR = config["validation"]["labels_dir"]


def manual_labels(session):
    """A session's manual DN labels (left 1, right 2) in validation.labels_dir."""
    return dentate_labels(LABELS_DIR, session)


if LABELS_DIR and not Path(LABELS_DIR).is_dir():
    raise WorkflowError(f"validation.labels_dir {LABELS_DIR} does not exist")


@functools.cache
def labelled():
    """Sessions with manual labels; looked up only when a rule needs them (not in every job's parse)."""
    return [s for s in BATCHES.sessions if LABELS_DIR and manual_labels(s).exists()]


def validation_path(name):
    """A file of the agreement with manual labels."""
    return str(OUTPUT_DIR / "validation" / name)


def labelled_batches(folder):
    """``folder(batch)`` of every batch that holds a session with manual labels."""
    return sorted({folder(BATCH_OF[s.key]) for s in labelled()})


def cohort_outputs(wildcards=None):
    """Everything the target all asks for (an input function: built only in the main process)."""
    return (
        [
            cohort_path(role)
            for role in ("dataset_description", "measures", "failures", "review", "metadata_problems", "qc_page")
        ]
        + all_batches(measure_folder)
        + [stats_path(f"{name}.tsv") for name in STATS_TABLES]
        + [stats_path(f"{name}.png") for name in STATS_FIGURES]
        + ([validation_path("desc-agreement_summary.tsv")] if labelled() else [])
    )


# --- training paths (rules/train.smk) ---
MODELS = ("localization", "segmentation")


def train_path(*parts):
    """A file under the training work folder."""
    return str(Path(config["train"]["work_dir"]).joinpath(*parts))


def train_init_from(wildcards):
    """train.<model>.init_from as an input of the model's jobs (none when training from scratch)."""
    return config["train"][wildcards.model].get("init_from") or []


def models_path(*parts):
    """A file in the folder that receives exported models."""
    return str(Path(config["train"]["out_dir"]).joinpath(*parts))


def nnunet_raw(model):
    """nnU-Net raw dataset folder of one model (DatasetNNN_DNQSM<Model>)."""
    spec = config["train"][model]
    return train_path("nnunet", "raw", f"Dataset{spec['dataset_id']:03d}_DNQSM{model.capitalize()}")


def readable_or_nothing(path):
    """``[path]`` when it can be read, else ``[]`` (e.g. a symlink to a missing file): the preprocess
    job then runs and records the failure for that session alone."""
    return [str(path)] if os.path.exists(path) else []


def report_failures():
    """After a run: say how many sessions failed or need review, and where they are listed."""
    for role, what in (
        ("failures", "session(s) failed"),
        ("review", "session(s) need review (labels made, a plausibility check doubts them)"),
        ("metadata_problems", "visit metadata problem(s), each with the fallback applied"),
    ):
        listing = Path(cohort_path(role))
        if listing.exists():
            n = len(listing.read_text().splitlines()) - 1
            if n:
                print(f"dnqsm: {n} {what}; see {listing} (and {cohort_path('measures')})")
