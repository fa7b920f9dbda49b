"""ClassificationTransformer: stage shapes, fused heads vs a per-head
reference, padding mask, determinism, input checks; and the MCC metric."""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastrnn.cola import POOLINGS, ClassificationTransformer, matthews_corrcoef  # noqa: E402

V, H, T_MAX = 23, 16, 10


def vocab(size=V):
    return {f"w{i}": i for i in range(size)}


def small_model(pooling="flatten", num_heads=2, dim_qk=8, dim_v=6, seed=0):
    return ClassificationTransformer(vocab(), hidden_dim=H, num_heads=num_heads,
                                     dim_feedforward=32, dim_k=dim_qk, dim_v=dim_v, dim_q=dim_qk,
                                     max_length=T_MAX, pooling=pooling, seed=seed).eval()


def padded_batch(lengths=(10, 7, 3, 1), T=T_MAX, seed=1):
    """Token ids (N, T) with random words; pad_mask true after each sentence's length."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (len(lengths), T), generator=g)
    pad_mask = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return ids.masked_fill(pad_mask, 0), pad_mask


def per_head_reference(model, x, pad_mask=None):
    """multi_head_attention written out one head at a time, straight from the definition."""
    outputs = []
    for i in range(model.num_heads):
        q_rows = slice(i * model.dim_q, (i + 1) * model.dim_q)
        v_rows = slice(i * model.dim_v, (i + 1) * model.dim_v)
        q = x @ model.W_q.weight[q_rows].T + model.W_q.bias[q_rows]
        k = x @ model.W_k.weight[q_rows].T + model.W_k.bias[q_rows]
        v = x @ model.W_v.weight[v_rows].T + model.W_v.bias[v_rows]
        scores = q @ k.transpose(1, 2) / math.sqrt(model.dim_k)
        if pad_mask is not None:
            scores = scores.masked_fill(pad_mask[:, None, :], -math.inf)
        outputs.append(torch.softmax(scores, dim=-1) @ v)
    attended = model.attention_projection(torch.cat(outputs, dim=-1))
    return torch.nn.functional.layer_norm(x + attended, (model.hidden_dim,),
                                          model.norm_attention.weight, model.norm_attention.bias)


# ------------------------------------------------------------------ shapes

@pytest.mark.parametrize("pooling", POOLINGS)
def test_every_stage_has_the_documented_shape(pooling):
    model = small_model(pooling)
    ids, pad_mask = padded_batch()
    N = ids.shape[0]
    x = model.embed(ids)
    assert x.shape == (N, T_MAX, H)
    x = model.multi_head_attention(x, pad_mask)
    assert x.shape == (N, T_MAX, H)
    x = model.feedforward_layer(x)
    assert x.shape == (N, T_MAX, H)
    assert model.final_layer(x).shape == (N, 1)
    assert model(ids).shape == (N, 1)
    assert model(ids, pad_mask).shape == (N, 1)


def test_spec_defaults_build_the_spec_model():
    model = ClassificationTransformer(vocab())
    assert (model.hidden_dim, model.num_heads, model.dim_feedforward) == (128, 2, 2048)
    assert (model.dim_q, model.dim_k, model.dim_v, model.max_length) == (96, 96, 96, 43)
    assert model.pooling == "flatten"
    assert model.W_q.weight.shape == (2 * 96, 128)
    assert model.classifier.in_features == 43 * 128
    ids = torch.randint(0, V, (3, 43))
    out = model.eval()(ids)
    assert out.shape == (3, 1)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_output_is_a_probability(pooling):
    model = small_model(pooling)
    # Large embeddings push the logits far from 0; the sigmoid must still stay inside (0, 1).
    ids, pad_mask = padded_batch(lengths=(10, 5, 2, 9, 4, 6))
    out = model(ids, pad_mask)
    assert torch.all((out > 0) & (out < 1))
    assert torch.allclose(out, torch.sigmoid(model.logits(ids, pad_mask)))


# -------------------------------------------------------- fused heads = reference

@pytest.mark.parametrize("num_heads, dim_qk, dim_v", [(2, 8, 6), (2, 96, 96), (1, 5, 7), (3, 4, 9)])
@pytest.mark.parametrize("masked", [False, True])
def test_fused_heads_equal_a_per_head_reference(num_heads, dim_qk, dim_v, masked):
    model = small_model(num_heads=num_heads, dim_qk=dim_qk, dim_v=dim_v).double()
    ids, pad_mask = padded_batch()
    x = model.embed(ids)
    mask = pad_mask if masked else None
    with torch.no_grad():
        fused = model.multi_head_attention(x, mask)
        reference = per_head_reference(model, x, mask)
    assert torch.allclose(fused, reference, rtol=1e-10, atol=1e-12)


def test_feedforward_layer_follows_the_formula():
    model = small_model().double()
    x = torch.randn(3, T_MAX, H, dtype=torch.float64)
    W1, b1 = model.feedforward_in.weight, model.feedforward_in.bias
    W2, b2 = model.feedforward_out.weight, model.feedforward_out.bias
    expected = torch.nn.functional.layer_norm(
        x + torch.relu(x @ W1.T + b1) @ W2.T + b2, (H,),
        model.norm_feedforward.weight, model.norm_feedforward.bias)
    with torch.no_grad():
        assert torch.allclose(model.feedforward_layer(x), expected, rtol=1e-10, atol=1e-12)


def test_embed_adds_token_and_position_embeddings():
    model = small_model()
    ids, _ = padded_batch()
    expected = model.token_embedding.weight[ids] + model.position_embedding.weight[:T_MAX]
    assert torch.equal(model.embed(ids), expected)


# --------------------------------------------------------------- padding mask

@pytest.mark.parametrize("pooling", POOLINGS)
def test_mask_makes_the_output_independent_of_pad_content(pooling):
    model = small_model(pooling)
    ids, pad_mask = padded_batch()
    other = torch.where(pad_mask, torch.randint(0, V, ids.shape), ids)
    assert not torch.equal(ids, other)
    with torch.no_grad():
        assert torch.allclose(model(ids, pad_mask), model(other, pad_mask), atol=1e-6)
        # The test can fail: without the mask the pad content leaks into the output.
        assert not torch.allclose(model(ids), model(other), atol=1e-6)


def test_no_query_attends_to_a_pad_key():
    model = small_model()
    ids, pad_mask = padded_batch()
    x = model.embed(ids)
    with torch.no_grad():
        before = model.multi_head_attention(x, pad_mask)
        # Any change confined to pad positions of x leaves the non-pad rows alone.
        changed = x + 100.0 * pad_mask[..., None] * torch.randn_like(x)
        after = model.multi_head_attention(changed, pad_mask)
    keep = ~pad_mask
    assert torch.allclose(before[keep], after[keep], atol=1e-5)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_masked_short_input_equals_masked_full_padding(pooling):
    """Dropping trailing pad columns changes nothing when the mask is on
    (fastrnn-cola relies on this to skip work on padding)."""
    model = small_model(pooling)
    ids, pad_mask = padded_batch(lengths=(6, 4, 2))
    with torch.no_grad():
        assert torch.allclose(model(ids, pad_mask), model(ids[:, :6], pad_mask[:, :6]), atol=1e-6)


def test_max_pooling_takes_the_largest_value_of_the_real_rows_only():
    model = small_model("max")
    ids, pad_mask = padded_batch(lengths=(6, 4, 2))
    with torch.no_grad():
        x = model.encode(ids, pad_mask)
        pooled = model._pool(x.masked_fill(pad_mask[..., None], 0.0), pad_mask)
        # Written out row by row: a zeroed pad row must not win over negative states.
        expected = torch.stack([x[i, ~pad_mask[i]].max(dim=0).values for i in range(len(ids))])
    assert (expected < 0).any()  # else zero-filled pads would pass too
    assert torch.equal(pooled, expected)


# ------------------------------------------------------------- determinism

def test_same_seed_same_model_and_output():
    a, b, c = small_model(seed=7), small_model(seed=7), small_model(seed=8)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.W_q.weight, c.W_q.weight)
    ids, pad_mask = padded_batch()
    assert torch.equal(a(ids, pad_mask), b(ids, pad_mask))


def test_seeded_construction_leaves_the_global_rng_alone():
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    small_model(seed=11)
    assert torch.equal(torch.rand(4), expected)


def test_every_parameter_gets_a_gradient():
    model = small_model().train()
    ids, pad_mask = padded_batch()
    model.logits(ids, pad_mask).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.token_embedding.weight.grad.abs().sum() > 0


# -------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("bad, error, words", [
    (torch.full((2, 4), V), ValueError, "token id 23"),
    (torch.full((2, 4), -1), ValueError, "token id -1"),
    (torch.zeros(2, 4, 3, dtype=torch.long), ValueError, "2-D"),
    (torch.zeros(4, dtype=torch.long), ValueError, "2-D"),
    (torch.zeros(2, T_MAX + 1, dtype=torch.long), ValueError, "max_length=10"),
    (torch.zeros(2, 4), TypeError, "integer token ids"),
    ([[1, 2]], TypeError, "torch.Tensor"),
])
def test_bad_token_ids_are_rejected_clearly(bad, error, words):
    with pytest.raises(error, match=words):
        small_model()(bad)


def test_bad_pad_masks_are_rejected_clearly():
    model = small_model()
    ids, pad_mask = padded_batch()
    with pytest.raises(TypeError, match="pad_mask must be a boolean"):
        model(ids, pad_mask.long())
    with pytest.raises(ValueError, match=r"pad_mask must have shape \(N, T\) = \(4, 10\)"):
        model(ids, pad_mask[:, :5])
    all_pad = pad_mask.clone()
    all_pad[2] = True
    with pytest.raises(ValueError, match="every position of sequence 2"):
        model(ids, all_pad)


def test_bad_hidden_states_are_rejected_clearly():
    model = small_model()
    with pytest.raises(ValueError, match=r"\(N, T, H=16\)"):
        model.multi_head_attention(torch.zeros(2, 3, H + 1))
    with pytest.raises(TypeError, match="floating-point"):
        model.feedforward_layer(torch.zeros(2, 3, H, dtype=torch.long))
    with pytest.raises(ValueError, match="max_length"):
        model.final_layer(torch.zeros(2, T_MAX + 2, H))


@pytest.mark.parametrize("kwargs, words", [
    (dict(dim_q=8, dim_k=9), "dim_q .* must equal dim_k"),
    (dict(num_heads=0), "num_heads must be a positive integer"),
    (dict(pooling="sum"), "pooling must be one of"),
    (dict(dropout=1.0), "dropout must be in"),
])
def test_bad_configuration_is_rejected_clearly(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ClassificationTransformer(vocab(), **kwargs)


def test_word_to_ix_is_only_measured():
    # As in the assignment: V = len(word_to_ix), whatever the ids are.
    model = ClassificationTransformer({"a": 0, "b": 5, "c": "7"}, hidden_dim=8, num_heads=1,
                                      dim_feedforward=8, dim_k=4, dim_v=4, dim_q=4, max_length=5)
    assert model.vocab_size == 3 and model.token_embedding.weight.shape == (3, 8)
    with pytest.raises(TypeError, match="non-empty dict"):
        ClassificationTransformer({})


# ----------------------------------------------------------------- MCC

def test_matthews_corrcoef_is_the_phi_coefficient():
    rng = np.random.default_rng(0)
    for _ in range(5):
        y = rng.integers(0, 2, 200)
        p = np.where(rng.random(200) < 0.7, y, 1 - y)
        assert matthews_corrcoef(y, p) == pytest.approx(np.corrcoef(y, p)[0, 1], abs=1e-12)
    y = rng.integers(0, 2, 50)
    assert matthews_corrcoef(y, y) == pytest.approx(1.0)
    assert matthews_corrcoef(y, 1 - y) == pytest.approx(-1.0)
    assert matthews_corrcoef(y, np.ones_like(y)) == 0.0   # the majority-class baseline
