"""The command line as a new user meets it: flags anywhere, region names in any case, every config listed."""
import os
import subprocess
import sys

import pytest

from geoaccess.cli import build_parser, main
from geoaccess.config import load_region
from geoaccess.errors import ConfigError

from conftest import PROJECT_ROOT

MINIMAL = """
[region]
key = "{key}"
name = "{name}"
admin_prefix = "54"
working_crs = "EPSG:32645"
"""


@pytest.mark.parametrize("argv", [
    ["gaps", "--region", "tibet", "-q"],
    ["data", "check", "--region", "tibet", "-q"],
    ["propose", "clinics", "--region", "tibet", "-q"],
    ["map", "--region", "tibet", "--quiet"],
    ["regions", "-q"],
])
def test_quiet_after_the_subcommand_is_accepted(argv):
    assert build_parser().parse_args(argv).quiet is True


def test_flags_before_the_subcommand_still_work_and_are_not_reset_by_it():
    args = build_parser().parse_args(["-v", "gaps", "--region", "tibet"])
    assert args.verbose is True and args.quiet is False
    args = build_parser().parse_args(["traveltime", "--region", "tibet", "-v", "--debug"])
    assert args.verbose is True and args.debug is True


def test_quiet_after_the_subcommand_silences_info_logs(data_dir):
    r = subprocess.run([sys.executable, str(PROJECT_ROOT / "cli.py"), "data", "check", "--region", "tibet",
                        "--data", str(data_dir), "-q"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert " INFO " not in r.stderr and "[gazetteer]" in r.stdout


@pytest.mark.parametrize("name", ["Tibet", "TIBET", " tibet "])
def test_region_names_ignore_letter_case(name):
    assert load_region(name).key == "tibet"


def test_a_misspelt_region_gets_a_suggestion(capsys):
    with pytest.raises(ConfigError, match="did you mean 'tibet'"):
        load_region("tibt")
    assert main(["gaps", "--region", "Chongqin"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'chongqing'" in err[0]


def test_regions_lists_configs_in_the_working_folder_and_in_geoaccess_regions(tmp_path, monkeypatch, capsys):
    (tmp_path / "regions").mkdir()
    (tmp_path / "regions" / "testland.toml").write_text(MINIMAL.format(key="testland", name="Testland 测试区"),
                                                        encoding="utf-8")
    extra = tmp_path / "shared_configs"
    extra.mkdir()
    (extra / "Otherland.toml").write_text(MINIMAL.format(key="otherland", name="Otherland"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GEOACCESS_REGIONS", str(extra))
    assert main(["regions"]) == 0
    out = capsys.readouterr().out
    for text in ("testland", "Testland 测试区", str(tmp_path / "regions" / "testland.toml"), "Otherland",
                 str(extra / "Otherland.toml"), "tibet"):
        assert text in out, text
    assert load_region("otherland").key == "otherland"  # listed names are the names --region takes
    assert load_region("TESTLAND").name == "Testland 测试区"


def test_regions_names_a_broken_config_instead_of_failing(tmp_path, monkeypatch, capsys):
    (tmp_path / "regions").mkdir()
    (tmp_path / "regions" / "broken.toml").write_text("[region\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GEOACCESS_REGIONS", raising=False)
    assert main(["regions"]) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "cannot be loaded" in out and "tibet" in out


def test_readme_command_table_is_one_table_listing_every_command():
    """A blank line inside a Markdown table ends it: every row after it shows as raw text."""
    lines = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| command | what it does |")
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append(line)
    text = "\n".join(table)
    for command in ("`regions`", "`data check", "`traveltime", "`gaps --region", "`propose clinics", "`propose centres",
                    "`gaps … --map`", "`map --region", "`export --region"):
        assert f"| {command}" in text, command


def test_readme_says_the_browser_test_needs_chromium():
    text = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    assert "chromium chromium-driver" in text and "skipped" in text
