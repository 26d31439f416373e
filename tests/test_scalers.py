"""Scalers are fitted on training embeddings only; the test set never moves them."""
import numpy as np
import pytest
from sklearn.preprocessing import MinMaxScaler, Normalizer, StandardScaler

from songspace import scalers


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((50, 6)) * [1, 2, 3, 4, 5, 6] + [0, 1, -1, 10, 0, 2]
    test = rng.standard_normal((20, 6))
    return train, test


def test_registry_names_and_unknown_name():
    assert scalers.NAMES == ("MinMaxScaler", "StandardScaler", "Normalizer")
    assert scalers.classes()["StandardScaler"] is StandardScaler and tuple(scalers.classes()) == scalers.NAMES
    with pytest.raises(KeyError, match="choose one of: MinMaxScaler, StandardScaler, Normalizer"):
        scalers.make("RobustScaler")


@pytest.mark.parametrize("name", scalers.NAMES)
def test_test_set_never_reaches_the_fitted_statistics(name, data):
    train, test = data
    tr_a, te_a = scalers.fit_apply(name, train, test)
    tr_b, te_b = scalers.fit_apply(name, train, test + 100.0)  # a shifted test set
    np.testing.assert_array_equal(tr_a, tr_b)  # training side unchanged, bit for bit
    fitted = scalers.fit(name, train)
    np.testing.assert_allclose(te_a, fitted.transform(test))
    np.testing.assert_allclose(te_b, fitted.transform(test + 100.0))


def test_fitted_statistics_are_the_training_statistics(data):
    train, test = data
    _, te = scalers.fit_apply("MinMaxScaler", train, test)
    lo, hi = train.min(0), train.max(0)
    np.testing.assert_allclose(te, (test - lo) / (hi - lo))
    _, te = scalers.fit_apply("StandardScaler", train, test)
    np.testing.assert_allclose(te, (test - train.mean(0)) / train.std(0))
    tr, te = scalers.fit_apply("Normalizer", train, test)
    np.testing.assert_allclose(te, test / np.linalg.norm(test, axis=1, keepdims=True))
    np.testing.assert_allclose(np.linalg.norm(tr, axis=1), 1.0)


def test_a_shifted_test_set_shifts_exactly_by_the_training_scale(data):
    train, test = data
    delta = 7.0
    _, te = scalers.fit_apply("StandardScaler", train, test)
    _, te_shift = scalers.fit_apply("StandardScaler", train, test + delta)
    np.testing.assert_allclose(te_shift - te, np.broadcast_to(delta / train.std(0), te.shape))
    # a scaler refitted on the test set would have absorbed the shift
    refit = StandardScaler().fit(test + delta).transform(test + delta)
    assert not np.allclose(refit, te_shift)


def test_bad_shapes_name_the_problem(data):
    train, test = data
    with pytest.raises(ValueError, match="expected"):
        scalers.fit_apply("MinMaxScaler", train, test[:, :3])
    with pytest.raises(ValueError, match="training embeddings"):
        scalers.fit("MinMaxScaler", np.zeros((0, 4)))
    assert isinstance(scalers.make("Normalizer"), Normalizer)
    assert isinstance(scalers.make("MinMaxScaler"), MinMaxScaler)
