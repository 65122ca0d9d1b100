"""devec-docs: numbered blocks in markdown filled from runs' results, --check finds stale blocks, unknown names fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_effects import fake_multirun

from devec.report.docs import block_text, command, fill, main
from devec.report.effects import HELPS

PLACEHOLDER = "run `bash experiments/table1.sh && devec-docs table1=<sweep>`\n"


def _docs(root: Path) -> Path:
    """A README with the block ``table1`` among hand-written text, and a docs page with another block."""
    readme = root / "README.md"
    readme.write_text(f"# title\n\nbefore\n<!-- devec:numbers table1 -->\n{PLACEHOLDER}<!-- /devec:numbers -->\n"
                      "after\n")
    (root / "docs").mkdir()
    (root / "docs" / "other.md").write_text(f"<!-- devec:numbers fig5 -->\n{PLACEHOLDER}<!-- /devec:numbers -->\n")
    return readme


def test_fill_replaces_only_the_named_blocks():
    text = ("a\n<!-- devec:numbers x -->\nold x\n<!-- /devec:numbers -->\nb\n"
            "<!-- devec:numbers y -->\nold y\n<!-- /devec:numbers -->\nc\n")
    new, changed = fill(text, {"x": "new x\n"})
    assert changed == ["x"] and "new x\n<!-- /devec:numbers -->\nb\n" in new and "old y" in new
    assert new.startswith("a\n") and new.endswith("c\n") and "old x" not in new
    assert fill(new, {"x": "new x\n"}) == (new, [])  # filled once: nothing left to change
    inline = "Blocks are `<!-- devec:numbers NAME -->` lines.\n" + text  # a marker quoted in prose is no block
    assert fill(inline, {"x": "new x\n"})[1] == ["x"]
    with pytest.raises(ValueError, match="without its"):
        fill("<!-- devec:numbers x -->\nnever closed\n", {"x": "new\n"})


def test_block_holds_the_table_the_effects_the_command_and_the_date(tmp_path):
    sweep = fake_multirun(tmp_path / "out")
    body = block_text(sweep, "table1")
    assert "`devec -m experiment=table1_multitask decomposition.tau=0.85 seed=0,1,2`" in body
    assert "3 runs, seed 0, 1, 2; results of 20" in body
    assert "| method | avg | n |" in body and "| Task Arithmetic | 51.00 ± " in body
    assert f"- {HELPS}: TA + DeVec vs TA" in body and "n = 3 seeds" in body
    assert command([]) == "devec"


def test_devec_docs_writes_blocks_and_check_detects_staleness(tmp_path, capsys):
    sweep = fake_multirun(tmp_path / "out")
    readme = _docs(tmp_path)
    args = [f"table1={sweep}", "--root", str(tmp_path)]
    with pytest.raises(SystemExit) as stale:
        main([*args, "--check"])
    assert stale.value.code == 1 and "stale: " in capsys.readouterr().out
    assert PLACEHOLDER in readme.read_text()  # --check writes nothing
    main(args)
    text = readme.read_text()
    assert text.startswith("# title\n\nbefore\n<!-- devec:numbers table1 -->\n") and text.endswith("after\n")
    assert "51.00 ± " in text and PLACEHOLDER not in text
    assert PLACEHOLDER in (tmp_path / "docs" / "other.md").read_text()  # a block not named is left alone
    main([*args, "--check"])
    assert "up to date" in capsys.readouterr().out
    results = sweep / "1" / "results.json"  # a rerun changes a result: the block no longer matches
    data = json.loads(results.read_text())
    data["rows"][0]["avg"] += 5.0
    results.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as stale:
        main([*args, "--check"])
    assert stale.value.code == 1 and f"stale: {readme}: table1" in capsys.readouterr().out


def test_a_block_name_no_document_has_is_an_error(tmp_path):
    sweep = fake_multirun(tmp_path / "out")
    _docs(tmp_path)
    with pytest.raises(SystemExit, match="no block named table9"):
        main([f"table9={sweep}", "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match="give NAME=RUNS"):
        main([str(sweep), "--root", str(tmp_path)])
