"""One decoder per output, as the paper's code builds its multi-output tasks (deap SelfAttReadouts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from maxa.probe.adapters import build_adapter, count_parameters, set_output_bias
from maxa.probe.checkpoint import load_checkpoint
from maxa.probe.maxa import MaxaAdapter, MaxaConfig
from maxa.probe.split import SplitAdapter
from maxa.probe.train import ProbeConfig, train

CHANNELS = 24


def _options(**config: Any) -> dict[str, Any]:
    return ProbeConfig(task="centers", query_grid=4, **config).adapter_options()


def test_centres_get_one_full_decoder_per_output_as_the_papers_config() -> None:
    """deap experiments.py centernet_cfg: outputs (('centers_gauss', 1), ('centers_size', 2)), and
    SelfAttReadouts builds `decoders[name] = decoder_cls(self, n_outs)` for each: the model's output is
    each decoder applied to the same features."""
    torch.manual_seed(0)
    heat = MaxaAdapter(CHANNELS, 1, MaxaConfig(query_grid=(4, 4)))
    sizes = MaxaAdapter(CHANNELS, 2, MaxaConfig(query_grid=(4, 4)))
    model = build_adapter("maxa", CHANNELS, 3, _options())
    assert isinstance(model, SplitAdapter) and model.groups == [1, 2]
    state = {f"parts.0.{k}": v for k, v in heat.state_dict().items()}
    state |= {f"parts.1.{k}": v for k, v in sizes.state_dict().items()}
    model.load_state_dict(state)
    x = torch.randn(2, 5, 7, CHANNELS)
    expected = torch.cat([heat(x), sizes(x)], dim=1)
    torch.testing.assert_close(model(x), expected)
    resized = torch.cat([heat(x, (20, 24)), sizes(x, (20, 24))], dim=1)
    torch.testing.assert_close(model(x, output_size=(20, 24)), resized)
    assert model.native_size == heat.native_size == (32, 32)
    assert count_parameters(model) == count_parameters(heat) + count_parameters(sizes)
    # the decoders share nothing: a loss on the heatmap alone trains only the heatmap's decoder
    F.mse_loss(model(x)[:, :1], torch.zeros(2, 1, 32, 32)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parts[0].parameters())
    assert all(p.grad is None or not p.grad.any() for p in model.parts[1].parameters())


def test_shared_decoders_and_old_checkpoints_build_one_adapter() -> None:
    shared = build_adapter("maxa", CHANNELS, 3, _options(center_decoders="shared"))
    assert isinstance(shared, MaxaAdapter) and shared.out_channels == 3
    legacy = {k: v for k, v in _options().items() if k != "output_groups"}  # written before the option
    assert isinstance(build_adapter("maxa", CHANNELS, 3, legacy), MaxaAdapter)
    assert ProbeConfig(task="semantic").adapter_options()["output_groups"] == []


def test_output_bias_goes_to_each_decoder_in_channel_order() -> None:
    model = build_adapter("maxa", CHANNELS, 3, _options())
    assert isinstance(model, SplitAdapter)
    set_output_bias(model, [-2.0, 0.25, 0.5])
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 3, CHANNELS))  # LayerNorm of zeros: only biases reach the output
    parts = [part(torch.zeros(1, 3, 3, CHANNELS)) for part in model.parts]
    torch.testing.assert_close(out, torch.cat(parts, dim=1))
    assert model.parts[0].skip.bias.tolist() == [-2.0]
    assert model.parts[1].skip.bias.tolist() == [0.25, 0.5]


def test_centres_checkpoints_rebuild_their_decoders(stores: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "centers.pt"
    config = ProbeConfig(task="centers", iterations=3, batch_size=8, query_grid=4, checkpoint_every=0)
    meta = train(config, stores["features_train"], stores["targets_train"], str(out), progress=False)
    assert meta.adapter_options["output_groups"] == [1, 2]
    assert meta.task_options["center_decoders"] == "separate"
    model, _ = load_checkpoint(str(out))
    assert isinstance(model, SplitAdapter)
    # a checkpoint written before the option (one shared adapter, no record of it) still loads as such
    blob = torch.load(out, weights_only=True)
    shared = MaxaAdapter(blob["meta"]["in_channels"], 3, MaxaConfig(query_grid=(4, 4)))
    blob["state_dict"] = shared.state_dict()
    del blob["meta"]["adapter_options"]["output_groups"]
    del blob["meta"]["task_options"]["center_decoders"]
    del blob["meta"]["config"]["center_decoders"]
    torch.save(blob, tmp_path / "old.pt")
    old, old_meta = load_checkpoint(str(tmp_path / "old.pt"))
    assert isinstance(old, MaxaAdapter)
    assert old_meta.task_options["center_decoders"] == "shared"
    assert old_meta.config["center_decoders"] == "shared"
