from __future__ import annotations

import pytest

from qmtl_validation.core.model_cards import (
    ModelCard,
    ModelCardError,
    ModelCardRegistry,
    load_model_card,
)

REGISTRY_CARD = """\
strategy_id: momo_eu
version: "2.1"
owner: quant-desk
objective: Capture 3-12 month momentum in liquid EU equities.
data_overview:
  - Daily close prices, 2010-2024, adjusted for corporate actions
  - Primary-listing volumes for ADV
key_assumptions:
  - Momentum premium persists net of costs
  - Fills at close within 10% of ADV
key_limitations:
  - Crashes in sharp reversals (2009-style)
universe: STOXX 600 constituents
features: [mom_12_1, vol_63]
"""


def test_registry_schema_card_loads_every_field():
    card = load_model_card(REGISTRY_CARD)
    assert card.strategy_id == "momo_eu"
    assert card.model_card_version == "2.1" and card.version == "2.1"
    assert card.objective == "Capture 3-12 month momentum in liquid EU equities."
    assert card.data_overview == (
        "Daily close prices, 2010-2024, adjusted for corporate actions",
        "Primary-listing volumes for ADV",
    )
    assert card.key_assumptions == (
        "Momentum premium persists net of costs",
        "Fills at close within 10% of ADV",
    )
    assert card.key_limitations == ("Crashes in sharp reversals (2009-style)",)
    assert card.universe == "STOXX 600 constituents"
    assert card.features == ("mom_12_1", "vol_63")
    assert card.owner == "quant-desk"
    assert card.extra == {} and card.warnings == ()
    assert hash(card) == hash(load_model_card(REGISTRY_CARD))


def test_path_text_and_mapping_give_the_same_card(tmp_path):
    path = tmp_path / "momo_eu.yaml"
    path.write_text(REGISTRY_CARD, encoding="utf-8")
    from_path = load_model_card(path)
    assert from_path == load_model_card(str(path)) == load_model_card(REGISTRY_CARD)
    assert from_path.source == str(path)
    assert load_model_card({"strategy_id": "momo_eu", "objective": "x"}).objective == "x"


def test_version_alias_agreeing_is_fine_and_disagreeing_is_an_error():
    card = load_model_card("strategy_id: a\nversion: 3\nmodel_card_version: '3'\n")
    assert card.model_card_version == "3"
    with pytest.raises(ModelCardError, match="'version' and 'model_card_version' disagree"):
        load_model_card("strategy_id: a\nversion: 3\nmodel_card_version: '4'\n")


def test_unquoted_numeric_and_date_versions_are_kept_as_text():
    assert load_model_card("strategy_id: a\nversion: 1.5\n").model_card_version == "1.5"
    assert load_model_card("strategy_id: a\nversion: 2024-05-01\n").model_card_version == (
        "2024-05-01"
    )


def test_missing_strategy_id_is_an_error():
    with pytest.raises(ModelCardError, match="'strategy_id' is required"):
        load_model_card("objective: something\n")


def test_strategy_id_that_could_escape_a_folder_is_rejected():
    with pytest.raises(ModelCardError, match="strategy_id '../etc' is not a valid identifier"):
        load_model_card("strategy_id: ../etc\n")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("strategy_id: a\nobjective: [1, 2]\n", "'objective': expected a string, got a list"),
        ("strategy_id: a\nkey_assumptions: {a: 1}\n",
         "'key_assumptions': expected a list of strings, got a mapping"),
        ("strategy_id: a\nkey_limitations: [ok, {detail: x}]\n",
         r"key_limitations\[1\]: expected a string, got a mapping"),
        ("strategy_id: a\ndata_overview: 12\n",
         "'data_overview': expected a string or a list of strings, got a number"),
        ("strategy_id: a\nversion: true\n",
         "'model_card_version': expected a string or a number, got a boolean"),
        ("- just\n- a list\n", "expected a mapping, got a list"),
        ("", "the document is empty"),
    ],
)
def test_bad_types_are_named_precisely(document, message):
    with pytest.raises(ModelCardError, match=message):
        load_model_card(document)


def test_invalid_yaml_reports_the_line():
    with pytest.raises(ModelCardError,
                       match="invalid YAML at line 3, column 12: mapping values are not allowed"):
        load_model_card("strategy_id: a\nobjective: fine\nfeatures: a: b\n")


def test_unknown_keys_are_kept_and_reported_with_the_schema_key_meant():
    card = load_model_card(
        "strategy_id: a\nassumptions: [liquid markets]\nlimitations: [capacity]\n"
        "review_board: MRC\nobjectve: typo\n"
    )
    assert card.unknown_keys == ("assumptions", "limitations", "objectve", "review_board")
    assert card.extra["assumptions"] == ["liquid markets"]
    assert card.key_assumptions == ()
    hints = dict(zip(card.unknown_keys, card.warnings))
    assert "did you mean 'key_assumptions'?" in hints["assumptions"]
    assert "did you mean 'key_limitations'?" in hints["limitations"]
    assert "did you mean 'objective'?" in hints["objectve"]
    assert "did you mean" not in hints["review_board"]


def test_a_single_string_counts_as_a_one_item_list():
    card = load_model_card("strategy_id: a\nkey_assumptions: markets stay liquid\n")
    assert card.key_assumptions == ("markets stay liquid",)


def test_missing_file_is_a_model_card_error(tmp_path):
    with pytest.raises(ModelCardError, match="model card file not found"):
        load_model_card(tmp_path / "nope.yaml")


def _write(root, name, text):
    folder = root / "model_cards"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")


def test_registry_reads_yaml_and_yml_and_returns_none_without_a_card(tmp_path):
    _write(tmp_path, "momo_eu.yaml", REGISTRY_CARD)
    _write(tmp_path, "carry.yml", "strategy_id: carry\nobjective: FX carry\n")
    registry = ModelCardRegistry(tmp_path)
    assert registry.get("momo_eu").objective.startswith("Capture")
    assert registry.get("carry").objective == "FX carry"
    assert registry.get("absent") is None
    assert registry.strategy_ids() == ["carry", "momo_eu"]


def test_registry_rejects_a_card_declaring_another_strategy(tmp_path):
    _write(tmp_path, "momo_us.yaml", REGISTRY_CARD)
    with pytest.raises(ModelCardError, match="declares strategy_id 'momo_eu', expected 'momo_us'"):
        ModelCardRegistry(tmp_path).get("momo_us")


def test_registry_refuses_to_guess_between_yaml_and_yml(tmp_path):
    _write(tmp_path, "a.yaml", "strategy_id: a\n")
    _write(tmp_path, "a.yml", "strategy_id: a\n")
    with pytest.raises(ModelCardError, match="has both model_cards/a.yaml and model_cards/a.yml"):
        ModelCardRegistry(tmp_path).get("a")


def test_registry_load_all_separates_cards_from_errors(tmp_path):
    _write(tmp_path, "good.yaml", "strategy_id: good\nobjective: ok\n")
    _write(tmp_path, "bad.yaml", "strategy_id: bad\nkey_assumptions: {x: 1}\n")
    cards, errors = ModelCardRegistry(tmp_path).load_all()
    assert list(cards) == ["good"]
    assert list(errors) == ["bad"] and "key_assumptions" in errors["bad"]


def test_registry_rereads_an_edited_card(tmp_path):
    _write(tmp_path, "a.yaml", "strategy_id: a\nobjective: first\n")
    registry = ModelCardRegistry(tmp_path)
    assert registry.get("a").objective == "first"
    _write(tmp_path, "a.yaml", "strategy_id: a\nobjective: second\n")
    assert registry.get("a").objective == "second"


def test_registry_can_read_from_another_store():
    store = {"model_cards/remote.yml": "strategy_id: remote\nobjective: from the bucket\n"}
    registry = ModelCardRegistry("s3://bucket/landing", read_text=store.get)
    card = registry.get("remote")
    assert isinstance(card, ModelCard) and card.objective == "from the bucket"


def test_registry_rejects_an_invalid_strategy_id(tmp_path):
    with pytest.raises(ModelCardError, match="not a valid identifier"):
        ModelCardRegistry(tmp_path).get("../secrets")


def test_one_line_document_mentioning_a_yaml_name_is_read_as_text():
    assert load_model_card("strategy_id: foo.yaml").strategy_id == "foo.yaml"
    assert load_model_card("{strategy_id: a, objective: see x.yaml}").objective == "see x.yaml"
