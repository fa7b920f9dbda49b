"""fastrnn-cola training options: masked-token pre-training (--pretrain-epochs) and
length bucketing (--bucket). Small generated data only."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fastrnn.cli import cola as cli  # noqa: E402
from fastrnn.cola import ClassificationTransformer, TrainConfig, training  # noqa: E402
from fastrnn.cola import data as cola  # noqa: E402

SMALL = ["--hidden-dim", "16", "--heads", "2", "--head-dim", "8", "--dim-feedforward", "32",
         "--no-progress", "--threads", "1", "--bench-batches", "0"]


@pytest.fixture(autouse=True)
def one_thread():
    # Two threads on a busy machine with few cores can be many times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cola_dir(write_cola):
    """'The <noun> <verb>ed <adverb> .' (1) or with noun and verb swapped (0)."""
    rng = np.random.default_rng(0)

    def rows(n):
        out = []
        for _ in range(n):
            noun = rng.choice(["cats", "dogs", "birds", "hens"])
            verb = rng.choice(["walk", "jump", "sleep"])
            tail = " ".join(rng.choice(["today", "quietly", "again"], rng.integers(0, 6)))
            good = rng.random() < 0.7
            out.append((f"The {noun} {verb}ed {tail}." if good else f"The {verb}ed {noun} {tail}.",
                        good))
        return out
    return write_cola(rows(200), rows(40))


def test_encode_is_logits_before_pooling():
    data_vocab = {"<pad>": 0, "<unk>": 1, "[CLS]": 2, "a": 3}
    model = ClassificationTransformer(data_vocab, hidden_dim=8, dim_feedforward=16, dim_k=4,
                                          dim_v=4, dim_q=4, max_length=6, seed=0).eval()
    ids = torch.tensor([[2, 3, 3, 0, 0, 0]])
    pad_mask = ids == 0
    states = model.encode(ids, pad_mask)
    assert states.shape == (1, 6, 8)
    torch.testing.assert_close(model.final_logits(states, pad_mask), model.logits(ids, pad_mask))


@pytest.mark.parametrize("subwords", [None, (3, 4)])
def test_pretraining_learns_to_predict_hidden_words(cola_dir, subwords):
    data = cola.load_cola(cola_dir, n_train=160, min_count=1, subwords=subwords)
    config = TrainConfig(pretrain_epochs=40, lr=1e-2, dropout=0, batch_size=32, mask_prob=0.3,
                         hidden_dim=16, heads=2, head_dim=8, dim_feedforward=32, progress=False,
                         threads=1, bench_batches=0)
    torch.manual_seed(0)
    model = training.build_model(data, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = training.pretrain(model, data, config)
    assert len(losses) == 40
    # Guessing from word frequencies alone costs the unigram entropy; the
    # sentences are formulaic, so context makes hidden words far more predictable.
    words = data.train.ids[~data.train.pad_mask & (data.train.ids != data.word_to_ix["[CLS]"])]
    frequencies = np.bincount(words) / len(words)
    unigram_entropy = -np.sum(frequencies[frequencies > 0] * np.log(frequencies[frequencies > 0]))
    assert losses[-1] < 0.75 * unigram_entropy, (losses, unigram_entropy)
    # ... but not certain: a noun or verb slot is a 3- or 4-way guess even in
    # context (a loss near 0 would mean the hidden words leak into the input).
    assert losses[-1] > 0.15 * unigram_entropy, losses
    assert not torch.equal(before["W_q.weight"], model.W_q.weight)
    # The classifier is not part of pre-training.
    assert torch.equal(before["classifier.weight"], model.classifier.weight)


def test_cli_pretrains_then_fits(cola_dir, capsys):
    assert cli.main(["--data", str(cola_dir), "--n-train", "160", "--epochs", "1",
                     "--pretrain-epochs", "2", "--bucket", "4"] + SMALL) == 0
    text = capsys.readouterr().out
    assert "pre-training epoch   2  masked-token loss" in text and "best epoch 1 of 1" in text


def test_epoch_batches_cover_every_row_once_and_bucketing_groups_lengths():
    lengths = np.random.default_rng(0).integers(2, 40, 1000)
    plain = training.epoch_batches(np.random.default_rng(1), lengths, 16)
    # No bucketing: the same batches as splitting one shuffle (what training always did).
    expected = np.array_split(np.random.default_rng(1).permutation(1000), 16)
    assert all(np.array_equal(a, b) for a, b in zip(plain, expected))
    bucketed = training.epoch_batches(np.random.default_rng(1), lengths, 16, bucket=8)
    assert len(bucketed) == 16
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    padded = [sum(lengths[b].max() for b in batches) for batches in (plain, bucketed)]
    assert padded[1] < 0.7 * padded[0]           # far fewer pad positions per epoch
    # Batches are not in length order (the pools' batches are shuffled).
    maxima = [lengths[b].max() for b in bucketed]
    assert maxima != sorted(maxima)


def test_pretraining_flags_are_documented(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--pretrain-epochs", "--mask-prob", "--bucket", "--subwords", "--ensemble"):
        assert flag in text
    # The flags' defaults are TrainConfig's.
    assert cli.config_from_args(cli.build_parser().parse_args([])) == TrainConfig()
