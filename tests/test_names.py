"""One naming authority (dnqsm.names): the names it gives, and no file name spelled anywhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from dnqsm import names

REPO = Path(__file__).resolve().parents[1]
#: Pieces of the names dnqsm gives its outputs: none may appear outside dnqsm/names.py (tests spell them
#: on purpose: they check the contract independently).
SPELLED = re.compile(
    r"_seg\.nii|_cropped|_metadata\.json|_cerebellar_mask|_prob\.nii|desc-dentate|desc-preproc|"
    r"_qc\.png|measures\.tsv|failures\.tsv|review\.tsv|metadata_problems\.tsv|qc\.html|"
    r"(^|/)logs(/|$)|(^|/)benchmarks/[a-z]"
)
#: ``desc`` values that only names.py passes to the BIDS builder
DESCS = {"dentate", "localization", "cerebellum", "preproc"}


def test_the_authority_gives_the_documented_names(tmp_path):
    assert (
        names.derivative_path(tmp_path, "01", "02", "dseg", rec="tkd")
        == tmp_path / "sub-01/ses-02/anat/sub-01_ses-02_rec-tkd_desc-dentate_dseg.nii.gz"
    )
    assert (
        names.derivative_path(tmp_path, "01", None, "snapshot")
        == tmp_path / "sub-01/figures/sub-01_desc-dentate_qc.png"
    )
    assert names.derivative_path(tmp_path, "01", "02", "mask").name == "sub-01_ses-02_desc-localization_mask.nii.gz"
    assert names.derivative_ending("snapshot") == "_desc-dentate_qc.png"
    assert names.cohort_file(tmp_path, "measures") == tmp_path / "cohort/desc-dentate_measures.tsv"
    assert names.preproc_files(tmp_path / "sub-01_ses-02") == (
        tmp_path / "sub-01_ses-02/sub-01_ses-02_desc-preproc_Chimap.nii.gz",
        tmp_path / "sub-01_ses-02/sub-01_ses-02_desc-preproc_Chimap.json",
    )
    assert names.result_path(tmp_path, "img", "crop_probability") == tmp_path / "img/img_cropped_prob.nii.gz"
    assert names.log_file(tmp_path, "segment/nnunet", "batch-3") == tmp_path / "logs/segment/nnunet/batch-3.log"
    assert names.benchmark_file(tmp_path, "stats") == tmp_path / "benchmarks/stats.tsv"


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring constants of a module and of its classes and functions."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _spelled_in_python(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            if SPELLED.search(node.value):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:60]!r}")
        elif (
            isinstance(node, ast.keyword)
            and node.arg == "desc"
            and isinstance(node.value, ast.Constant)
            and node.value.value in DESCS
        ):
            found.append(f"{path.relative_to(REPO)}:{node.value.lineno}: desc={node.value.value!r}")
    return found


def _spelled_in_rules(path: Path) -> list[str]:
    text = re.sub(r'"""(.|\n)*?"""', lambda m: "\n" * m.group(0).count("\n"), path.read_text())
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        for literal in re.findall(r'"([^"]*)"|\'([^\']*)\'', code):
            if SPELLED.search(literal[0] or literal[1]):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:80]}")
    return found


def test_no_output_name_is_spelled_outside_the_naming_authority():
    python = [p for folder in ("dnqsm", "scripts", "benchmarks") for p in (REPO / folder).rglob("*.py")]
    python += list((REPO / "docs").glob("*.py"))
    found = [hit for p in python if p != REPO / "dnqsm" / "names.py" for hit in _spelled_in_python(p)]
    found += [hit for p in [REPO / "Snakefile", *(REPO / "rules").glob("*.smk")] for hit in _spelled_in_rules(p)]
    assert not found, "file names spelled outside dnqsm/names.py:\n" + "\n".join(found)
