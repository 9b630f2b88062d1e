import dataclasses

import pytest

from lib.config import PROFILES, ROOT, RunPaths, TrainConfig, get_profile


def test_three_profiles_and_default():
    assert set(PROFILES) == {"smoke", "cpu", "paper"}
    assert get_profile().name == "cpu" and get_profile().train.backbone == "e5-small"
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
    with pytest.raises(ValueError, match="pooling='cls'"):
        TrainConfig(pooling="cls", mode="hamam")  # the entity in the second segment would stay unmasked
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


def test_key_is_stable_and_sensitive_to_every_field():
    a = TrainConfig()
    assert a.key() == TrainConfig().key()
    valid = {
        "mode": "masked",
        "pooling": ("cls", {"mode": "unmasked"}),
        "precision": "fp32",
        "inner_val": 0.2,
        "loss": "focal",
        "batch_size": 64,  # must stay a multiple of grad_accum_steps
        "grad_accum_steps": 2,
        "polar_weight": (2.0, {"loss": "two_head"}),
    }  # checked fields
    for f in dataclasses.fields(TrainConfig):
        value = getattr(a, f.name)
        if f.name in valid:
            v, extra = valid[f.name] if isinstance(valid[f.name], tuple) else (valid[f.name], {})
            assert dataclasses.replace(a, **{f.name: v}, **extra).key() != dataclasses.replace(a, **extra).key(), f.name
            continue
        if isinstance(value, bool):
            changed = not value
        elif isinstance(value, (int, float)):
            changed = value + 1
        else:
            changed = value + "-x"
        assert dataclasses.replace(a, **{f.name: changed}).key() != a.key(), f.name


def test_a_backbone_override_is_the_main_backbone_everywhere():
    prof = get_profile("paper", backbone="xlm-roberta-large")
    assert prof.train.backbone == "xlm-roberta-large" and prof.backbones == ("xlm-roberta-large", "google/rembert")
    assert get_profile("cpu", backbone="some/dir").backbones == ("some/dir",)


def test_overrides_flow_into_the_train_config():
    prof = get_profile("smoke", msd_k=1, mode="masked")
    assert prof.train.msd_k == 1 and prof.train.mode == "masked" and prof.train.backbone == "tiny-random"
    assert PROFILES["smoke"].train.msd_k == 5  # the registry is not mutated


def test_only_the_default_profile_writes_committed_figures():
    assert RunPaths("cpu").figures == ROOT / "figures"
    assert RunPaths("smoke").figures == ROOT / "runs" / "smoke" / "figures"
