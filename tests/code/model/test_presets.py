"""Model presets: published sizes on the meta device, the registry contract, the `presets` command."""

from __future__ import annotations

import pytest

from domainfm.code.model import PRESETS, PUBLISHED_PARAMS, build_model, count_params

LARGE = ["starcoder2-3b", "starcoder2-7b", "starcoder2-15b", "starcoder-15b"]


@pytest.mark.parametrize("name", LARGE)
def test_large_presets_match_published_size(name: str) -> None:
    model = build_model(name, device="meta")
    n = count_params(model)
    published = PUBLISHED_PARAMS[name]
    assert abs(n - published) / published < 0.03, f"{name}: {n / 1e9:.3f}B vs published {published / 1e9:.2f}B"
    assert next(model.parameters()).device.type == "meta"


def test_starcoder2_architecture_is_as_published() -> None:
    from transformers import GPTBigCodeForCausalLM, Starcoder2ForCausalLM

    want = {"starcoder2-3b": (30, 3072, 24, 2, 12288, 999999.4420358813),
            "starcoder2-7b": (32, 4608, 36, 4, 18432, 1e6),
            "starcoder2-15b": (40, 6144, 48, 4, 24576, 1e5)}
    for name, (layers, hidden, heads, kv, ffn, theta) in want.items():
        c = PRESETS.get(name)()
        got_theta = getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"]
        assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                c.intermediate_size, got_theta) == (layers, hidden, heads, kv, ffn, theta)
        assert (c.vocab_size, c.max_position_embeddings, c.sliding_window) == (49152, 16384, 4096)
        assert c.hidden_act == "gelu_pytorch_tanh" and c.norm_epsilon == 1e-5 and c.use_bias
        assert isinstance(build_model(name, device="meta"), Starcoder2ForCausalLM)
    sc = PRESETS.get("starcoder-15b")()
    assert (sc.n_layer, sc.n_embd, sc.n_head, sc.multi_query, sc.n_inner, sc.n_positions) == (
        40, 6144, 48, True, 24576, 8192)
    assert isinstance(build_model("starcoder-15b", device="meta"), GPTBigCodeForCausalLM)


def test_small_presets_sizes() -> None:
    tiny = count_params(build_model("tiny", device="meta"), exclude_embeddings=True)
    small = count_params(build_model("small", device="meta"), exclude_embeddings=True)
    assert 1e6 <= tiny < 1e7, tiny  # a few million
    assert 1e7 <= small < 1e8, small  # tens of millions
    assert PRESETS.get("tiny")().model_type == PRESETS.get("small")().model_type == "starcoder2"


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_builds_with_a_custom_vocab(name: str) -> None:
    """Registry contract: every preset is a transformers causal LM whose vocabulary follows the tokenizer."""
    model = build_model(name, vocab_size=1000, device="meta")
    assert model.get_input_embeddings().weight.shape[0] == 1000
    assert model.get_output_embeddings().weight.shape[0] == 1000
    assert count_params(model) > count_params(model, exclude_embeddings=True)


def test_tiny_runs_forward_and_backward_on_cpu() -> None:
    import torch

    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=300, device="cpu")
    x = torch.randint(0, 300, (2, 16))
    out = model(input_ids=x, labels=x)
    assert out.logits.shape == (2, 16, 300)
    # a freshly initialised model is close to uniform: loss ~ ln(300)
    assert abs(out.loss.item() - torch.log(torch.tensor(300.0)).item()) < 0.5
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_unknown_preset_lists_known_ones() -> None:
    from domainfm.core.errors import UserError

    with pytest.raises(UserError, match="known: .*tiny"):
        build_model("starcoder2-1b", device="meta")


def test_presets_command_lists_every_preset(capsys: pytest.CaptureFixture[str]) -> None:
    from domainfm.cli import main

    assert main(["code", "presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS.names():
        assert name in out
    assert "3.03B" in out and "7.17B" in out and "15.96B" in out
