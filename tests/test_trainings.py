"""The named training regimes (rnas_lib.trainings): their settings, names and the networks they select."""
import pytest

from rnas_lib.certified_training import certified_settings
from rnas_lib.runs import load_json
from rnas_lib.tiers import TABLE_EPS, get_tier
from rnas_lib.train import TrainConfig, trained_model
from rnas_lib.trainings import CERTIFIED_RECIPE, TRAININGS, network_name, select_networks, split_name, training_overrides


@pytest.mark.parametrize("epochs", [1, 2, 15, 600])
@pytest.mark.parametrize("tier", list(TABLE_EPS))
def test_every_regime_is_a_valid_training_at_the_tiers_table_eps(tier, epochs):
    assert training_overrides("standard", tier, epochs) == {}
    assert training_overrides("pgd", tier, epochs)["adversarial"]["eps"] == TABLE_EPS[tier][0]
    certified = training_overrides("certified", tier, epochs)["certified"]
    assert certified["eps"] == TABLE_EPS[tier][0] and certified["method"] == CERTIFIED_RECIPE["method"]
    full = certified_settings(certified, epochs)  # valid, and unchanged by the check
    assert {k: full[k] for k in certified} == {**certified, "eps": float(certified["eps"])}
    assert certified["warmup_epochs"] + certified["ramp_epochs"] <= epochs
    for training in TRAININGS:  # each one builds a TrainConfig
        TrainConfig(epochs=epochs, **training_overrides(training, tier, epochs))


def test_the_certified_regime_brings_its_own_budget_unless_the_caller_sets_one():
    own = training_overrides("certified", "smoke")
    assert own["epochs"] == CERTIFIED_RECIPE["epochs_factor"] * get_tier("smoke").train_epochs == 60
    assert (own["certified"]["warmup_epochs"], own["certified"]["ramp_epochs"]) == (5, 30)
    assert training_overrides("certified", "smoke", train_epochs=3)["epochs"] == 3 * CERTIFIED_RECIPE["epochs_factor"]
    assert "epochs" not in training_overrides("certified", "smoke", 15)
    TrainConfig(**own)


def test_unknown_regimes_and_tiers_are_one_clear_error():
    with pytest.raises(ValueError, match="unknown training 'ibp'; allowed: standard, pgd, certified"):
        training_overrides("ibp", "smoke", 15)
    with pytest.raises(ValueError, match="unknown tier 'tiny'"):
        training_overrides("pgd", "tiny", 15)
    with pytest.raises(ValueError, match="unknown training"):
        network_name("darts", "adversarial")


def test_names_and_the_networks_an_evaluation_compares():
    assert [network_name("darts", t) for t in TRAININGS] == ["darts", "darts-pgd", "darts-certified"]
    for label in ("darts", "dsrna_cb", "my-cell"):
        for training in TRAININGS:
            assert split_name(network_name(label, training)) == (label, training)
    recorded = ["darts", "dsrna_cb", "darts-certified"]
    assert select_networks(recorded, None) == recorded
    assert select_networks(recorded, "standard") == ["darts", "dsrna_cb"]
    assert select_networks(recorded, "certified") == ["darts-certified", "darts", "dsrna_cb-certified", "dsrna_cb"]
    assert select_networks(["DARTS_V2"], "pgd") == ["DARTS_V2-pgd", "DARTS_V2"]


def test_trained_model_trains_a_regime_under_its_own_name():
    result = trained_model("DARTS_V2", "smoke", training="certified", epochs=2, train_limit=64, test_limit=32,
                           progress=False)
    assert result.out_dir.name.startswith("DARTS_V2-certified_seed0-")
    config = load_json(result.out_dir / "config.json")["train"]
    assert config["certified"] == certified_settings(training_overrides("certified", "smoke", 2)["certified"], 2)
    assert [h["certified"]["eps"] for h in result.history][-1] == pytest.approx(TABLE_EPS["smoke"][0])
