"""The grid's distances against scipy.spatial.distance per row, and kulsinski against a loop."""
import numpy as np
import pytest
from scipy.spatial import distance as sd

from songspace import distances

N, D = 40, 12


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    train = rng.standard_normal((60, D)) * rng.uniform(0.5, 3.0, D) + rng.uniform(-1, 1, D)
    u = rng.standard_normal((N, D))
    v = rng.standard_normal((N, D)) + 0.3
    return train, u, v


def scipy_row(name, a, b, ctx):
    """One row's distance by scipy (codes for the boolean metrics, as the grid defines them)."""
    if name == "minkowski":
        return sd.minkowski(a, b, p=ctx["p"])
    if name == "seuclidean":
        return sd.seuclidean(a, b, ctx["variances"])
    if name == "hamming":
        return sd.hamming(a > ctx["thresholds"], b > ctx["thresholds"])
    return getattr(sd, name)(a, b)


def kulsinski_loop(a, b):
    """scipy <= 1.10's kulsinski on two boolean vectors, one dimension at a time."""
    ctt = ctf = cft = 0
    for x, y in zip(a, b):
        if x and y:
            ctt += 1
        elif x:
            ctf += 1
        elif y:
            cft += 1
    n = len(a)
    return (ctf + cft - ctt + n) / (ctf + cft + n)


def test_registry_has_the_nine_grid_distances():
    assert distances.NAMES == (
        "chebyshev", "euclidean", "minkowski", "hamming", "cosine",
        "cityblock", "seuclidean", "correlation", "kulsinski",
    )
    for d in distances.DISTANCES.values():
        assert d.formula


def test_unknown_distance_lists_the_valid_ones():
    with pytest.raises(KeyError, match="choose one of: chebyshev, euclidean"):
        distances.get("manhattan")


SCIPY_NAMES = [n for n in distances.NAMES if n != "kulsinski"]


@pytest.mark.parametrize("name", SCIPY_NAMES)
def test_rowwise_matches_scipy_per_row(name, data):
    train, u, v = data
    ctx = distances.fit_context(name, train, minkowski_p=3.0)
    got = distances.rowwise(name, u, v, **ctx)
    expected = [scipy_row(name, a, b, ctx) for a, b in zip(u, v)]
    assert got.shape == (N,)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 4.5])
def test_minkowski_order_is_a_parameter(p, data):
    _, u, v = data
    expected = [sd.minkowski(a, b, p=p) for a, b in zip(u, v)]
    np.testing.assert_allclose(distances.minkowski(u, v, p=p), expected, rtol=1e-12)
    np.testing.assert_allclose(distances.pairwise("minkowski", u, v, p=p)[np.arange(N), np.arange(N)],
                               expected, rtol=1e-12)
    with pytest.raises(ValueError, match="p >= 1"):
        distances.minkowski(u, v, p=0.5)


@pytest.mark.parametrize("name", distances.NAMES)
def test_pairwise_matches_rowwise_for_every_pair(name, data):
    train, u, v = data
    x, y = u[:9], v[:13]
    ctx = distances.fit_context(name, train)
    full = distances.pairwise(name, x, y, **ctx)
    assert full.shape == (9, 13)
    for i in range(9):
        np.testing.assert_allclose(
            full[i], distances.rowwise(name, np.repeat(x[i : i + 1], 13, 0), y, **ctx),
            rtol=1e-12, atol=1e-12,
        )


@pytest.mark.parametrize("name", SCIPY_NAMES)
def test_pairwise_matches_scipy_cdist(name, data):
    train, u, v = data
    ctx = distances.fit_context(name, train)
    if name == "hamming":
        t = ctx["thresholds"]
        expected = sd.cdist(u > t, v > t, metric="hamming")
    elif name == "seuclidean":
        expected = sd.cdist(u, v, metric="seuclidean", V=ctx["variances"])
    elif name == "minkowski":
        expected = sd.cdist(u, v, metric="minkowski", p=ctx["p"])
    else:
        expected = sd.cdist(u, v, metric=name)
    np.testing.assert_allclose(distances.pairwise(name, u, v, **ctx), expected, rtol=1e-12, atol=1e-12)


def test_kulsinski_matches_a_plain_loop():
    rng = np.random.default_rng(1)
    a = rng.random((50, 9)) < 0.5
    b = rng.random((50, 9)) < 0.4
    # corner cases: all True, all False, identical rows
    a[0], b[0] = True, True
    a[1], b[1] = False, False
    b[2] = a[2]
    expected = [kulsinski_loop(x, y) for x, y in zip(a, b)]
    np.testing.assert_allclose(distances.kulsinski(a, b), expected, rtol=1e-15)
    full = distances.pairwise("kulsinski", a, b)
    loop = [[kulsinski_loop(x, y) for y in b] for x in a]
    np.testing.assert_allclose(full, loop, rtol=1e-15)
    # not a metric: a row's distance to itself is the share of its False bits
    assert distances.kulsinski(a[1:2], a[1:2])[0] == 1.0
    assert distances.kulsinski(a[0:1], a[0:1])[0] == 0.0


def test_kulsinski_on_floats_codes_at_the_training_median(data):
    train, u, v = data
    ctx = distances.fit_context("kulsinski", train)
    np.testing.assert_array_equal(ctx["thresholds"], np.median(train, axis=0))
    t = ctx["thresholds"]
    expected = [kulsinski_loop(a > t, b > t) for a, b in zip(u, v)]
    np.testing.assert_allclose(distances.rowwise("kulsinski", u, v, **ctx), expected, rtol=1e-15)


def test_boolean_metric_on_floats_needs_thresholds(data):
    _, u, v = data
    with pytest.raises(ValueError, match="thresholds"):
        distances.hamming(u, v)


def test_hamming_on_raw_floats_is_useless_which_is_why_codes(data):
    """scipy's hamming on float rows: every coordinate differs, every pair at distance 1."""
    train, u, v = data
    raw = [sd.hamming(a, b) for a, b in zip(u, v)]
    assert np.all(np.asarray(raw) == 1.0)
    coded = distances.rowwise("hamming", u, v, **distances.fit_context("hamming", train))
    assert len(np.unique(coded)) > 3 and coded.max() < 1.0


def test_context_comes_from_training_only(data):
    train, u, _ = data
    assert distances.fit_context("minkowski", train, minkowski_p=2.5) == {"p": 2.5}
    var = distances.fit_context("seuclidean", train)["variances"]
    np.testing.assert_allclose(var, np.var(train, axis=0, ddof=1))
    assert distances.fit_context("cosine", train) == {}
    # the distances of test rows depend on training statistics, not on the test rows
    ctx = distances.fit_context("seuclidean", train)
    shifted = u + 100.0
    np.testing.assert_allclose(
        distances.rowwise("seuclidean", shifted[:20], shifted[20:], **ctx),
        distances.rowwise("seuclidean", u[:20], u[20:], **ctx), rtol=1e-9,
    )


def test_seuclidean_zero_variance_dimension_is_ignored():
    u = np.array([[1.0, 5.0], [0.0, -3.0]])
    v = np.array([[2.0, 1.0], [0.0, 7.0]])
    got = distances.seuclidean(u, v, variances=np.array([4.0, 0.0]))
    np.testing.assert_allclose(got, [0.5, 0.0])
    np.testing.assert_allclose(got, [sd.seuclidean(a, b, [4.0, np.inf]) for a, b in zip(u, v)])


def test_zero_and_constant_rows_are_at_distance_one():
    z = np.zeros((1, 4))
    x = np.array([[1.0, 2.0, 0.0, -1.0]])
    c = np.full((1, 4), 3.0)
    assert distances.cosine(z, x)[0] == 1.0
    assert distances.cosine(z, z)[0] == 1.0
    assert distances.correlation(c, x)[0] == 1.0
    assert distances.pairwise("cosine", np.vstack([z, x]), x)[0, 0] == 1.0
    assert distances.pairwise("correlation", c, x)[0, 0] == 1.0


def test_shapes_and_context_are_checked(data):
    _, u, v = data
    with pytest.raises(ValueError, match="differ in shape"):
        distances.euclidean(u, v[:5])
    with pytest.raises(ValueError, match="dims"):
        distances.pairwise("euclidean", u, v[:, :3])
    with pytest.raises(TypeError, match="unexpected p"):
        distances.rowwise("cosine", u, v, p=3.0)
    with pytest.raises(ValueError, match="variances"):
        distances.rowwise("seuclidean", u, v)
