"""The contract every registered MIL aggregator keeps (walks the whole registry)."""

from __future__ import annotations

import pytest
import torch

from domainfm.pathology.mil.models import MIL_MODELS, MILModel, build_mil_model

D = 12


def _model(name: str) -> MILModel:
    torch.manual_seed(0)
    return build_mil_model(name, D, hidden=16).eval()


def test_registry_has_the_issue_models() -> None:
    assert {"meanpool", "maxpool", "chowder", "chowder-paper", "chowder-histossl", "abmil", "dsmil", "transmil",
            "clam-sb"} <= set(MIL_MODELS.names())


@pytest.mark.parametrize("name", MIL_MODELS.names())
def test_shapes_and_finite(name: str) -> None:
    m = _model(name)
    x = torch.randn(3, 7, D)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    out = m(x, mask)
    assert out.logits.shape == (3,)
    assert out.tile_scores.shape == (3, 7)
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.tile_scores).all()
    assert (out.tile_scores[1, 4:] == 0).all()  # padded positions carry no score
    assert m.tile_score_kind in ("logit", "attention")


@pytest.mark.parametrize("name", MIL_MODELS.names())
@pytest.mark.parametrize("n_real", [1, 3, 15])  # below and above Chowder's R = 10
def test_padding_changes_nothing(name: str, n_real: int) -> None:
    m = _model(name)
    x = torch.randn(1, n_real, D)
    ref = m(x, torch.ones(1, n_real, dtype=torch.bool))
    # the same bag padded with garbage (huge values) inside a batch with another bag
    pad = 9
    xp = torch.cat([x, 1e3 * torch.randn(1, pad, D)], dim=1)
    other = torch.randn(1, n_real + pad, D)
    batch = torch.cat([xp, other])
    mask = torch.zeros(2, n_real + pad, dtype=torch.bool)
    mask[0, :n_real] = True
    mask[1] = True
    out = m(batch, mask)
    torch.testing.assert_close(out.logits[0], ref.logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.tile_scores[0, :n_real], ref.tile_scores[0], rtol=1e-5, atol=1e-5)
    # and the padding does not depend on what is written in it
    out2 = m(torch.cat([torch.cat([x, torch.zeros(1, pad, D)], 1), other]), mask)
    torch.testing.assert_close(out2.logits, out.logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MIL_MODELS.names())
def test_permutation_invariant_and_gradients_flow(name: str) -> None:
    m = _model(name)
    x = torch.randn(2, 11, D)
    out = m(x)
    perm = torch.randperm(11)
    out_p = m(x[:, perm])
    if m.permutation_invariant:  # TransMIL reads the tiles as a sequence (PPEG): order matters by design
        torch.testing.assert_close(out_p.logits, out.logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_p.tile_scores, out.tile_scores[:, perm], rtol=1e-5, atol=1e-5)
    m.train()
    mask = torch.ones(2, 11, dtype=torch.bool)
    out = m(x, mask)
    loss = m.loss(out, torch.tensor([0.0, 1.0]), mask)  # the model's own training loss
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_model_lists_known() -> None:
    from domainfm.core.errors import UserError

    with pytest.raises(UserError, match="chowder"):
        build_mil_model("nope", D)


@pytest.mark.parametrize("name", MIL_MODELS.names())
def test_save_and_reload_gives_the_same_model(name: str, tmp_path) -> None:  # noqa: ANN001
    from domainfm.pathology.mil.store import load_mil_model, save_mil_model

    m = _model(name)
    save_mil_model(m, tmp_path, name, {"in_dim": D})
    again, meta = load_mil_model(tmp_path)
    assert type(again) is type(m) and again.hparams() == m.hparams() and meta["model"] == name
    x = torch.randn(2, 6, D)
    torch.testing.assert_close(again(x).logits, m(x).logits)
