"""The classifiers built around the Transformer: a feature term beside it, and ensembles."""
import torch
from torch.nn import functional as F

__all__ = ["WithFeatures", "MeanEnsemble"]


class WithFeatures(torch.nn.Module):
    """The Transformer's logit plus a linear function of per-sentence features.

    The same as concatenating the features to the pooled vector before the final
    linear layer, without touching the assignment's model. The feature weights start at
    zero, so the untrained model is the Transformer alone; ``fit_features``
    fits them alone first (a logistic regression) and freezes them.
    """

    def __init__(self, transformer, num_features):
        super().__init__()
        self.transformer = transformer
        self.word_to_ix = transformer.word_to_ix
        self.num_features = num_features
        self.feature_layer = torch.nn.Linear(num_features, 1)
        torch.nn.init.zeros_(self.feature_layer.weight)
        torch.nn.init.zeros_(self.feature_layer.bias)

    def logits(self, inputs, pad_mask=None, subwords=None, features=None):
        """inputs int (N, T), pad_mask bool (N, T), subwords int (N, T, S),
        features float (N, F) -> (N, 1)."""
        if features is None or features.shape != (inputs.shape[0], self.num_features):
            raise ValueError(f"WithFeatures: features must have shape (N, F) = "
                             f"({inputs.shape[0]}, {self.num_features}), got "
                             f"{None if features is None else tuple(features.shape)}")
        return self.transformer.logits(inputs, pad_mask, subwords) + self.feature_layer(features)

    def forward(self, inputs, pad_mask=None, subwords=None, features=None):
        return torch.sigmoid(self.logits(inputs, pad_mask, subwords, features))

    def fit_features(self, features, labels, l2=1e-3):
        """Fit the feature term as a logistic regression on its own, then freeze it.

        Trained jointly, the Transformer soon memorises the 7,000 training
        sentences and the (cross-fitted, hence honest) features lose their weight;
        frozen, they keep it and the Transformer learns what they leave unexplained.
        features float (N, F), labels float (N,).
        """
        layer = self.feature_layer
        optimizer = torch.optim.LBFGS(layer.parameters(), max_iter=200)

        def closure():
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(layer(features)[:, 0], labels) \
                + l2 * layer.weight.square().sum()
            loss.backward()
            return loss
        optimizer.step(closure)
        layer.requires_grad_(False)

    def config(self):
        return self.transformer.config()


class MeanEnsemble(torch.nn.Module):
    """K classifiers over the same vocabulary; predicts the mean of their probabilities."""

    def __init__(self, members):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.word_to_ix = members[0].word_to_ix

    def forward(self, inputs, pad_mask=None, subwords=None, **extra):
        """inputs int (N, T), pad_mask bool (N, T), subwords int (N, T, S) -> (N, 1);
        ``extra`` (features) goes to every member."""
        return torch.stack([m(inputs, pad_mask, subwords, **extra)
                            for m in self.members]).mean(dim=0)

    def config(self):
        return self.members[0].config()
