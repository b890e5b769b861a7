"""The documentation: README as a short front door, the configuration reference written from the schema,
benchmark pages that name what produced them, and stale pages marked."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from dnqsm import benchmark_page
from dnqsm.settings import ConfigError
from dnqsm.workflow.config import reference_markdown, schema_keys

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "config.schema.yaml"


def test_readme_is_a_short_front_door_without_dates():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text), "README describes the current state: no dates"
    for target in re.findall(r"\]\(((?:docs|models)/[^)#]+)", text):
        assert (REPO / target).exists(), f"README links to a missing {target}"


def test_readme_headlines_are_the_benchmark_pages_numbers():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- headlines:start -->\n", 1)[1].split("\n<!-- headlines:end -->", 1)[0]
    assert block == benchmark_page.headlines_markdown(), "run a benchmark, or benchmark_page.update_readme()"
    assert block.count("\n") >= 3, "the headline table has rows"


def test_every_schema_key_is_documented_in_the_reference():
    schema = yaml.safe_load(SCHEMA.read_text())
    reference = reference_markdown(SCHEMA)
    keys = [path for path, _ in schema_keys(schema)]
    assert len(keys) > 100
    for path in keys:
        assert f"`{path}`" in reference, path
    assert "| `inference.batch_size` | integer | `6` |" in reference  # default read from the schema
    assert "| `train.<model>.epochs` | integer | `20` (localization), `50` (segmentation) |" in reference


def test_a_key_without_description_fails_the_reference(tmp_path):
    schema = yaml.safe_load(SCHEMA.read_text())
    del schema["properties"]["inference"]["properties"]["threads"]["description"]
    broken = tmp_path / "schema.yaml"
    broken.write_text(yaml.safe_dump(schema))
    with pytest.raises(ConfigError, match="inference.threads"):
        reference_markdown(broken)


def test_benchmark_page_names_command_commit_models_and_machine(tmp_path):
    path = benchmark_page.write_page(
        "demo_bench",
        "A demo",
        "## Results\n\n| a | b |\n| --- | --- |\n| x | 1 |\n",
        argv=["benchmarks/demo_bench.py", "--images", "2"],
        pages=tmp_path,
    )
    text = path.read_text()
    facts = benchmark_page.read_facts(text)
    assert facts["command"] == "python benchmarks/demo_bench.py --images 2"
    assert facts["models_hash"] == benchmark_page.models_hash() != "none"
    assert facts["commit"] and facts["machine"] and re.match(r"20\d\d-\d\d-\d\d \d\d:\d\d UTC", facts["date"])
    assert benchmark_page.result_rows(text) == [{"a": "x", "b": "1"}]


def test_every_benchmark_script_writes_its_page():
    for script in (REPO / "benchmarks").glob("*.py"):
        assert "publish(" in script.read_text(), f"{script.name} does not write its page"


def test_a_page_of_other_models_is_marked_stale(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)

    def render(models_hash: str) -> str:
        page = SimpleNamespace(meta={"models_hash": models_hash}, file=SimpleNamespace(src_uri="benchmarks/x.md"))
        return hooks.on_page_markdown("# X\n\nnumbers", page, None, None)

    assert "Stale" in render("0123456789ab")
    assert "Stale" not in render(benchmark_page.models_hash())
    # a benchmark that measures no model (synthesis speed) is never stale, whatever its page recorded
    page = SimpleNamespace(
        meta={"models_hash": "0123456789ab"}, file=SimpleNamespace(src_uri="benchmarks/synth_speed.md")
    )
    assert "Stale" not in hooks.on_page_markdown("# X\n\nnumbers", page, None, None)


def test_a_page_of_a_benchmark_that_measures_no_model_records_none(tmp_path):
    text = benchmark_page.write_page(
        "synth_speed", "Speed", "## Results\n", argv=["benchmarks/synth_speed.py"], pages=tmp_path
    ).read_text()
    facts = benchmark_page.read_facts(text)
    assert facts["models_hash"] == "none" and not benchmark_page.is_stale("synth_speed", facts)
    assert "these numbers do not depend on the models" in text
    assert benchmark_page.is_stale("real", facts), "a page that measures models and recorded none is stale"


def test_every_page_in_the_navigation_exists():
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text().replace("!!python", ""))["nav"]

    def files(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, dict):
            for value in node.values():
                yield from files(value)
        else:
            for item in node:
                yield from files(item)

    for page in files(nav):
        assert (REPO / "docs" / page).exists(), page


def test_the_accuracy_headline_names_one_pass_and_mirrored():
    def row(cohort, mirroring, left, right):
        return {"cohort": cohort, "mirroring": mirroring, "Dice left (mean ± SD)": f"{left} ± 0.010",
                "Dice right (mean ± SD)": f"{right} ± 0.020"}  # fmt: skip

    rows = [row("test", "off", "0.926", "0.918"), row("external", "off", "0.913", "0.917")]
    assert benchmark_page._accuracy(rows, "test") == "Dice 0.926 / 0.918 one pass (left / right)"
    rows.append(row("test", "on", "0.929", "0.924"))
    assert benchmark_page._accuracy(rows, "test") == (
        "Dice 0.926 / 0.918 one pass, 0.929 / 0.924 mirrored (the default) (left / right)"
    )
    assert benchmark_page._accuracy(rows, "stress") is None


def test_the_reconstruction_headline_counts_only_agreeing_ok_reconstructions():
    import importlib.util
    import sys

    sys.path.insert(0, str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location("real_variants", REPO / "benchmarks" / "real_variants.py")
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    row = {"locator": "network", "left mm³": 700.0, "right mm³": 650.0, "reasons": ""}
    table = [
        {
            **row,
            "variant": "given",
            "made": variants.VARIANTS["given"],
            "status": "ok",
            "dice_left": 1.0,
            "dice_right": 1.0,
        },
        {
            **row,
            "variant": "tkd",
            "made": variants.VARIANTS["tkd"],
            "status": "ok",
            "dice_left": 0.9,
            "dice_right": 0.8,
        },
        {**row, "variant": "l2", "made": variants.VARIANTS["l2"], "status": "ok", "dice_left": 0.9, "dice_right": 0.7},
        {
            **row,
            "variant": "smoothed",
            "made": variants.VARIANTS["smoothed"],
            "status": "review",
            "dice_left": 0.9,
            "dice_right": 0.9,
        },
    ]
    text = variants.markdown(table)
    assert "1 of 3" in text
    assert benchmark_page._reconstructions(benchmark_page.result_rows(text)) == (
        "status ok and Dice >= 0.75 against the map as given: 1 of 3 reconstructions"
    )


def test_the_real_map_page_shows_montages_only_where_they_were_drawn(tmp_path, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_hooks", REPO / "docs" / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    page = SimpleNamespace(meta={}, file=SimpleNamespace(src_uri="benchmarks/real.md"))
    monkeypatch.setattr(hooks, "REAL_MONTAGES", tmp_path)
    text = hooks.on_page_markdown("# Real\n\ntable", page, None, None)
    assert "Not in the repository" in text and "![" not in text
    (tmp_path / "sub-x_Chimap.png").write_bytes(b"png")
    text = hooks.on_page_markdown("# Real\n\ntable", page, None, None)
    assert "![sub-x_Chimap](real-montages/sub-x_Chimap.png)" in text
    other = SimpleNamespace(meta={}, file=SimpleNamespace(src_uri="benchmarks/phantom.md"))
    assert "Montages" not in hooks.on_page_markdown("# P", other, None, None)


def test_a_page_names_its_commit_clean_when_only_pages_changed(tmp_path):
    """The benchmarks' own output (pages, README's headlines) does not make the code they ran "dirty";
    any other tracked change does."""
    import subprocess

    from dnqsm.analysis.cohort import git_commit

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "pages").mkdir()
    (tmp_path / "pages" / "speed.md").write_text("old\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    (tmp_path / "pages" / "speed.md").write_text("new\n")
    assert git_commit(tmp_path).endswith("-dirty")
    assert not git_commit(tmp_path, ignore=("pages",)).endswith("-dirty")
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path, ignore=("pages",)).endswith("-dirty")
