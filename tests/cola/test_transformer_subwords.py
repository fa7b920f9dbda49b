"""ClassificationTransformer with character n-gram subwords (num_subwords > 0)."""
import pytest

torch = pytest.importorskip("torch")

from fastrnn.cola import ClassificationTransformer  # noqa: E402

V, H, T, S, G = 12, 8, 6, 4, 30   # words, width, length, n-gram slots, n-gram table size


def model_with_subwords(seed=0):
    words = {f"w{i}": i for i in range(V)}
    return ClassificationTransformer(words, hidden_dim=H, num_heads=2, dim_feedforward=16,
                                     dim_k=4, dim_v=4, dim_q=4, max_length=T, num_subwords=G,
                                     seed=seed).eval()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V, (3, T), generator=g)
    subwords = torch.randint(1, G, (3, T, S), generator=g)
    subwords[:, :, 2:] = 0                    # most tokens use two slots ...
    subwords[0, 1] = torch.tensor([5, 6, 7, 8])  # ... one uses all four
    subwords[1, 2] = 0                        # ... one has none
    return ids, subwords


def test_embed_adds_the_mean_of_the_known_ngram_embeddings():
    model = model_with_subwords()
    ids, subwords = batch()
    got = model.embed(ids, subwords)
    word, pos, gram = (model.token_embedding.weight, model.position_embedding.weight,
                       model.subword_embedding.weight)
    for n in range(3):
        for t in range(T):
            grams = [g for g in subwords[n, t].tolist() if g != 0]
            expected = word[ids[n, t]] + pos[t]
            if grams:
                expected = expected + sum(gram[g] for g in grams) / len(grams)
            torch.testing.assert_close(got[n, t], expected)


def test_empty_slots_change_nothing_and_get_no_gradient():
    model = model_with_subwords().train()
    ids, subwords = batch()
    wider = torch.cat([subwords, torch.zeros(3, T, 5, dtype=torch.long)], dim=2)
    torch.testing.assert_close(model.eval()(ids, None, wider), model(ids, None, subwords))
    assert (model.subword_embedding.weight[0] == 0).all()
    model.train().logits(ids, None, subwords).sum().backward()
    grad = model.subword_embedding.weight.grad
    assert (grad[0] == 0).all() and grad[5].abs().sum() > 0


def test_an_unknown_word_is_told_apart_by_its_ngrams():
    model = model_with_subwords()
    ids, subwords = batch()
    ids[:, 1] = 1                              # the same word id (think <unk>) ...
    other = subwords.clone()
    other[:, 1] = torch.tensor([9, 10, 0, 0])  # ... spelled differently
    assert not torch.allclose(model(ids, None, subwords), model(ids, None, other))


def test_subwords_are_checked():
    model = model_with_subwords()
    ids, subwords = batch()
    with pytest.raises(ValueError, match="pass subwords"):
        model(ids)
    with pytest.raises(ValueError, match=r"shape \(N, T, S\) with \(N, T\) = \(3, 6\)"):
        model(ids, None, subwords[:, :4])
    with pytest.raises(ValueError, match="n-gram id 30"):
        model(ids, None, subwords.masked_fill(subwords == 5, G))
    with pytest.raises(TypeError, match="integer torch.Tensor"):
        model(ids, None, subwords.float())
    plain = ClassificationTransformer({f"w{i}": i for i in range(V)}, hidden_dim=H,
                                      dim_feedforward=16, dim_k=4, dim_v=4, dim_q=4,
                                      max_length=T)
    assert plain.subword_embedding is None and plain.config()["num_subwords"] == 0
    with pytest.raises(ValueError, match="no subword table"):
        plain(ids, None, subwords)
    with pytest.raises(ValueError, match="num_subwords must be 0"):
        ClassificationTransformer({"a": 0}, num_subwords=1)


def test_config_rebuilds_the_same_model():
    model = model_with_subwords(seed=3)
    ids, subwords = batch()
    again = ClassificationTransformer(model.word_to_ix, **model.config())
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval()(ids, None, subwords), model(ids, None, subwords))
    # Same seed, same n-gram table.
    assert torch.equal(model_with_subwords(seed=3).subword_embedding.weight,
                       model.subword_embedding.weight)
