"""docs/configuration.md documents every setting, and is what the generator writes now.

When one of these fails after a change to bridge/settings.py, give the new field a
``description=`` and run ``python -m bridge.devtools.config_docs``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo

from bridge.devtools import config_docs
from bridge.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"
CONTRACT = ROOT.parent / "shared" / "CONTRACT.md"
REGENERATE = "run `python -m bridge.devtools.config_docs` and commit docs/configuration.md"

FIELDS = sorted(Settings.model_fields.items())


def _contract_settings() -> set[str]:
    """The variable names in the first column of CONTRACT.md's settings table."""
    if not CONTRACT.is_file():
        # The public contract sits beside the checkout, not in it: a clone on its own has
        # only the generated docs to check, which the other tests here do.
        pytest.skip(f"the public contract {CONTRACT} is not beside this checkout")
    text = CONTRACT.read_text(encoding="utf-8")
    section = re.search(r"^## Settings\b.*?(?=^## )", text, re.M | re.S)
    assert section is not None, "CONTRACT.md has no '## Settings' section"
    names: set[str] = set()
    for line in section.group(0).splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", first_cell))
    assert names, "no variables found in CONTRACT.md's settings table"
    return names


def _documented_env_names() -> set[str]:
    return {name for _, field in FIELDS for name in config_docs.env_names(field)}


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_has_a_description(name: str, field: FieldInfo) -> None:
    assert field.description and field.description.strip(), (
        f"Settings.{name} has no description: add description=... to its Field"
    )


@pytest.mark.parametrize(("name", "field"), FIELDS, ids=[name for name, _ in FIELDS])
def test_every_setting_is_read_from_a_named_variable(name: str, field: FieldInfo) -> None:
    assert config_docs.env_names(field), f"Settings.{name} has no environment variable"


def test_every_variable_is_in_the_configuration_doc() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = sorted(n for n in _documented_env_names() if f"`{n}`" not in text)
    assert not missing, f"docs/configuration.md does not mention {missing}: {REGENERATE}"


def test_the_configuration_doc_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == config_docs.render(), (
        f"docs/configuration.md differs from what the settings say: {REGENERATE}"
    )


def test_every_setting_belongs_to_a_section() -> None:
    named = [name for section in config_docs.SECTIONS for name in section.fields]
    assert len(named) == len(set(named)), "a setting is in two sections"
    assert set(named) <= set(Settings.model_fields), "a section names a setting that is gone"
    unplaced = sorted(set(Settings.model_fields) - set(named))
    assert not unplaced, f"add {unplaced} to a section in bridge/devtools/config_docs.py"


def test_the_check_mode_notices_a_stale_file(tmp_path: Path) -> None:
    doc = tmp_path / "configuration.md"
    assert config_docs.main(["--check", "--output", str(doc)]) == 1
    assert config_docs.main(["--output", str(doc)]) == 0
    assert config_docs.main(["--check", "--output", str(doc)]) == 0
    doc.write_text(doc.read_text(encoding="utf-8") + "edited by hand\n", encoding="utf-8")
    assert config_docs.main(["--check", "--output", str(doc)]) == 1


def test_defaults_are_written_as_an_operator_would() -> None:
    fields = Settings.model_fields
    assert config_docs.format_default(fields["twilio_auth_token"]) == "unset"
    assert config_docs.format_default(fields["recordings"]) == "`false`"
    assert config_docs.format_default(fields["drain_s"]) == "`900`"
    assert config_docs.format_default(fields["audio_format"]) == "`pcmu`"


def test_every_contract_variable_is_a_setting() -> None:
    missing = sorted(_contract_settings() - _documented_env_names())
    assert not missing, f"CONTRACT.md names {missing}, which bridge.settings.Settings lacks"


def test_the_doc_marks_exactly_the_contract_variables_public() -> None:
    contract = _contract_settings()
    assert contract == config_docs.PUBLIC, (
        "PUBLIC in bridge/devtools/config_docs.py disagrees with CONTRACT.md: "
        f"only in PUBLIC {sorted(config_docs.PUBLIC - contract)}, "
        f"only in the contract {sorted(contract - config_docs.PUBLIC)}"
    )
