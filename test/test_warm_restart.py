"""Warm restart (run.init_weights, checkpointing.warm_start): a fresh schedule from saved weights."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_checkpoint
from test_training import _tiny_config, stripes  # noqa: F401  (the stripes fixture)

from bisenetv2_ros.weights.checkpoint import load_checkpoint
from training.export import main as export_main
from training.train import Trainer


@pytest.fixture(scope="module")
def parent_deploy(stripes, tmp_path_factory):  # noqa: F811
    """A tiny deploy file (no booster heads) from a 2-iteration run on the stripes."""
    folder = tmp_path_factory.mktemp("parent")
    Trainer(_tiny_config(stripes, folder / "run", 2), progress=False).train()
    return export_main([str(folder / "run" / "latest.pt"), str(folder / "deploy.pt")])


def test_warm_start_loads_the_deploy_tensors_and_starts_the_booster_heads_from_scratch(stripes, parent_deploy,  # noqa: F811
                                                                                      tmp_path, capsys):
    deploy = load_checkpoint(parent_deploy)
    assert deploy.kind == "deploy" and not any(k.startswith("aux_heads.") for k in deploy.state_dict)
    warm = Trainer(_tiny_config(stripes, tmp_path / "warm", 2, init_weights=str(parent_deploy)), progress=False)
    assert f"initialised from {parent_deploy} (deploy, " in capsys.readouterr().out
    fresh = Trainer(_tiny_config(stripes, tmp_path / "fresh", 2), progress=False)  # same seed, no init_weights
    warm_state, fresh_state = warm.model.state_dict(), fresh.model.state_dict()
    for key, value in deploy.state_dict.items():
        assert torch.equal(warm_state[key], value.float()), key
    differing = [k for k in deploy.state_dict if k.endswith("weight") and not torch.equal(warm_state[k], fresh_state[k])]
    assert len(differing) > 10  # the parent's training really moved the weights away from the fresh init
    aux = [k for k in warm_state if k.startswith("aux_heads.")]
    assert aux and all(torch.equal(warm_state[k], fresh_state[k]) for k in aux)
    assert warm.iteration == 0 and warm.scheduler.last_epoch == 0  # a fresh schedule
    result = warm.train()
    assert result["iteration"] == 2


def test_warm_start_from_weights_of_other_classes_or_another_architecture_is_a_clear_error(stripes, tmp_path):  # noqa: F811
    other = make_tiny_checkpoint(tmp_path / "camvid.pt", num_classes=11)
    with pytest.raises(ValueError, match=r"^run.init_weights .*camvid.pt: its classes \['sky', 'building', .*\] are "
                                         r"not this dataset's \['dark', 'bright', 'mid'\]$"):
        Trainer(_tiny_config(stripes, tmp_path / "a", 2, init_weights=str(other)), progress=False)
    wide = _tiny_config(stripes, tmp_path / "wide", 2)
    wide.model.width_multiplier = 0.5
    wide_path = Trainer(wide, progress=False).save("wide.pt", {})
    with pytest.raises(ValueError, match=r"^run.init_weights .*wide.pt does not fit this model: \d+ keys differ"):
        Trainer(_tiny_config(stripes, tmp_path / "b", 2, init_weights=str(wide_path)), progress=False)
    with pytest.raises(Exception, match="nonexistent.pt"):
        Trainer(_tiny_config(stripes, tmp_path / "c", 2, init_weights=str(tmp_path / "nonexistent.pt")),
                progress=False)


def test_resume_takes_precedence_over_init_weights(stripes, parent_deploy, tmp_path, capsys):  # noqa: F811
    Trainer(_tiny_config(stripes, tmp_path / "run", 3), progress=False).train()
    latest = load_checkpoint(tmp_path / "run" / "latest.pt")
    capsys.readouterr()
    resumed = Trainer(_tiny_config(stripes, tmp_path / "run", 3, init_weights=str(parent_deploy)), resume=True,
                      progress=False)
    out = capsys.readouterr().out
    assert "resumed from" in out and "initialised from" not in out
    assert resumed.iteration == 3
    state = resumed.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in latest.state_dict.items())
    # With no latest.pt yet, --resume starts the run, and then init_weights applies.
    fresh = Trainer(_tiny_config(stripes, tmp_path / "new", 3, init_weights=str(parent_deploy)), resume=True,
                    progress=False)
    assert "initialised from" in capsys.readouterr().out and fresh.iteration == 0


def test_a_warm_started_run_records_its_parent_lineage_through_a_resume(stripes, parent_deploy, tmp_path):  # noqa: F811
    import json

    from training.lineage import PARENT_KEY

    config = lambda: _tiny_config(stripes, tmp_path / "run", 4, init_weights=str(parent_deploy))  # noqa: E731
    first = Trainer(config(), progress=False)
    first.config.run.iterations = 3  # stop early; the resumed run keeps the 4-iteration schedule
    first.train()
    recorded = json.loads(load_checkpoint(tmp_path / "run" / "latest.pt").info.provenance[PARENT_KEY])
    assert len(recorded) == 1 and recorded[0]["weights"] == str(parent_deploy)
    assert recorded[0]["iterations"] == "2" and len(recorded[0]["sha256"]) == 64
    Trainer(config(), resume=True, progress=False).train()
    final = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert final.training_state["iteration"] == 4 and json.loads(final.info.provenance[PARENT_KEY]) == recorded
