# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := results/demo

.PHONY: demo test venv bench clean demo-models comparison docs lint format

venv: $(STAMP)

# torch/torchvision are pinned to the builds that work with nnU-Net here (see docs/install.md).
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

# The demo: generate the synthetic cohort, then run the whole workflow on it and build the report.
# Test-time mirroring (on by default) only where it is cheap, a GPU: on a 2-core CPU its 8 passes
# would take the demo's 18 sessions well past five minutes.
DEMO_CONFIG := --config "inference={mirroring: auto}"
demo: $(STAMP)
	$(BIN)/snakemake --profile profiles/local synth_cohort
	start=$$(date +%s); $(BIN)/snakemake --profile profiles/local $(DEMO_CONFIG) && \
	  echo "workflow wall time: $$(( $$(date +%s) - start )) s"
	$(BIN)/snakemake --profile profiles/local $(DEMO_CONFIG) --report $(DEMO)/report.html
	@echo ""
	@echo "Demo cohort (input):  $(DEMO)/bids   (ground truth in $(DEMO)/bids/derivatives/manual)"
	@echo "Cohort table:         $(DEMO)/dnqsm/cohort/desc-dentate_measures.tsv (+ .json sidecar)"
	@echo "Failures:             $(DEMO)/dnqsm/cohort/failures.tsv"
	@echo "QC snapshots:         $(DEMO)/dnqsm/sub-*/ses-*/figures/*_desc-dentate_qc.png"
	@echo "QC review page:       $(DEMO)/dnqsm/qc.html (open in a browser; export qc_ratings.tsv, set qc.ratings)"
	@echo "Statistics:           $(DEMO)/dnqsm/stats/*.tsv and *.png"
	@echo "Snakemake report:     $(DEMO)/report.html"

# Two pytest-xdist workers, one per core (TEST_WORKERS=1 runs serially); each test module stays on one
# worker, the longest modules first (tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP) lint
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20

# Formatting and lint, run first by `make test`: ruff (Python: lint and format), snakefmt (the rules)
# and Snakemake's own linter. `make format` applies both formatters.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint --cores 1 --quiet

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile rules

# The documentation site (MkDocs + Material): served at http://127.0.0.1:8000; `make test` builds it strictly.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/python benchmarks/synth_speed.py

clean:
	rm -rf results .snakemake .pytest_cache

# Reproduce the bundled demo models in stages: both models trained from scratch by the workflow's
# train_models target on a fixed-seed `train` cohort (config/config.yaml), then continued on further
# synthetic cohorts (config/training/finetune.yaml, stage3-6), then both continued on domain-randomized
# images pooled with a physics-based `wide` cohort (config/training/stage8_randomized.yaml), and last the
# segmentation model on pools weighted to physics-based images (config/training/stage9_mix.yaml, then
# stage10_sites.yaml and stage11_physics.yaml); the last stage's zips and provenance (which embeds the earlier stages') are copied into models/demo/.
# The last two stages draw half their randomized images from the QSM Challenge 2.0 head phantom's segmentation
# (Marques et al. 2021, doi 10.34973/m20r-jt17; SegmentedModel.nii.gz), which is not bundled: download it
# and point HEAD_PHANTOM at it.
HEAD_PHANTOM ?= ../shared/data/head-phantom/SegmentedModel.nii.gz
demo-models: $(STAMP)
	@test -f $(HEAD_PHANTOM) || { echo "demo-models: no head phantom at $(HEAD_PHANTOM); download the QSM Challenge 2.0 \
	  head phantom (doi 10.34973/m20r-jt17) and run make demo-models HEAD_PHANTOM=/path/to/SegmentedModel.nii.gz"; exit 2; }
	$(BIN)/dnqsm synth --preset train --seed 1 --out results/train/bids --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage1.yaml
	$(BIN)/dnqsm synth --preset train --seed 2 --out results/train2/bids --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/finetune.yaml
	$(BIN)/dnqsm synth --preset train --seed 3 --out results/train3/bids --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage3.yaml
	$(BIN)/dnqsm synth --preset wide --seed 4 --out results/train4/bids --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage4.yaml
	$(BIN)/dnqsm synth --preset wide --seed 5 --first-label 101 --out results/train5/bids --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage5.yaml
	$(BIN)/dnqsm synth --preset wide --seed 8 --subjects 48 --first-label 301 --out results/train8/bids --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage6_tv.yaml
	$(BIN)/dnqsm synth --preset wide --seed 9 --subjects 24 --first-label 401 --out results/train9/physics --overwrite --jobs 2
	$(BIN)/dnqsm randomize --images 80 --seed 10 --first-label 501 --phantom $(HEAD_PHANTOM) \
	   --out results/train9/randomized --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage8_randomized.yaml
	$(BIN)/dnqsm synth --preset wide --seed 10 --subjects 24 --first-label 601 --out results/train10/physics --overwrite --jobs 2
	$(BIN)/dnqsm randomize --images 40 --seed 10 --first-label 501 --phantom $(HEAD_PHANTOM) \
	   --out results/train10/randomized40 --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage9_mix.yaml
	$(BIN)/dnqsm synth --preset train --seed 11 --subjects 24 --first-label 701 --out results/train11/train --overwrite --jobs 2
	$(BIN)/dnqsm synth --preset wide --seed 11 --subjects 16 --first-label 801 --out results/train11/wide --overwrite --jobs 2
	$(BIN)/dnqsm randomize --images 40 --seed 10 --first-label 501 --phantom $(HEAD_PHANTOM) \
	   --out results/train11/randomized40 --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage10_sites.yaml
	$(BIN)/dnqsm synth --preset train --seed 12 --subjects 24 --first-label 901 --out results/train12/train --overwrite --jobs 2
	$(BIN)/dnqsm randomize --images 16 --seed 12 --first-label 601 --phantom $(HEAD_PHANTOM) \
	   --out results/train12/randomized16 --overwrite --jobs 2
	DNQSM_TRAIN_COMMAND="make demo-models" $(BIN)/snakemake --cores 2 \
	   train_models --configfile config/training/stage11_physics.yaml
	mkdir -p models/demo
	cp results/train12/models/localization.zip results/train12/models/segmentation.zip \
	   results/train12/models/provenance.json models/demo/

# The paper's comparison on synthetic cohorts: three labelled `train` subjects (one per site) are the
# atlases, the deep-learning method (bundled demo models) and the atlas baseline segment a `test` and
# an `external` cohort; the tables land in results/comparison/<cohort>/dnqsm/validation/ and on the
# documentation's page docs/benchmarks/comparison.md.
CMP := results/comparison
comparison: $(STAMP)
	$(BIN)/dnqsm synth --preset train --seed 1 --subjects 6 --out $(CMP)/atlases --overwrite --jobs 2
	for cohort in test external; do \
	  $(BIN)/dnqsm synth --preset $$cohort --seed 1 --subjects 20 --out $(CMP)/$$cohort/bids --overwrite --jobs 2 && \
	  $(BIN)/snakemake --profile profiles/local comparison --config bids_dir=$(CMP)/$$cohort/bids \
	    output_dir=$(CMP)/$$cohort/dnqsm work_dir=$(CMP)/$$cohort/work \
	    "validation={labels_dir: $(CMP)/$$cohort/bids/derivatives/manual}" \
	    "atlas={bids_dir: $(CMP)/atlases, labels_dir: $(CMP)/atlases/derivatives/manual, participant_label: ['001', '002', '003']}" \
	  || exit 1; \
	done
	$(BIN)/python benchmarks/comparison.py --root $(CMP)
