import pytest

from lib.config import PROFILES, ROOT, RunPaths, TrainConfig, get_profile


def test_three_profiles_and_default():
    assert set(PROFILES) == {"smoke", "cpu", "paper"}
    assert get_profile().name == "cpu" and get_profile().train.backbone == "navec-bert"
    smoke = get_profile("smoke")
    assert smoke.max_rows and smoke.max_rows < 1000 and smoke.n_folds == 2 and smoke.train.epochs == 1
    assert len(get_profile("paper").backbones) == 3


def test_unknown_profile_and_bad_fields_fail_clearly():
    with pytest.raises(ValueError, match="unknown profile"):
        get_profile("gpu")
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="half")
    with pytest.raises(ValueError, match="msd_k"):
        TrainConfig(msd_k=0)


def test_key_is_stable_and_sensitive_to_every_field():
    a = TrainConfig()
    assert a.key() == TrainConfig().key()
    assert a.key() != TrainConfig(neutral_weight=0.3).key()
    assert a.key() != TrainConfig(seed=1).key()


def test_overrides_flow_into_the_train_config():
    prof = get_profile("smoke", msd_k=1, mode="masked")
    assert prof.train.msd_k == 1 and prof.train.mode == "masked" and prof.train.backbone == "tiny-random"
    assert PROFILES["smoke"].train.msd_k == 5  # the registry is not mutated


def test_only_the_default_profile_writes_committed_figures():
    assert RunPaths("cpu").figures == ROOT / "figures"
    assert RunPaths("smoke").figures == ROOT / "runs" / "smoke" / "figures"
