"""NSBAS solver: exact against a dense solution of the paper's Eq. 3; γ-independence."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from talik.science.inversion import (
    ConstraintSpec,
    constraint_basis,
    invert_nsbas,
    solve_nsbas,
    solve_rate,
)
from talik.science.network import Network, components


def _gapped_network(n_years: int = 2, neighbours: int = 3) -> Network:
    start = np.datetime64("2020-04-01")
    dates = start + np.arange(0, 365 * n_years, 12)
    doy = (dates - dates.astype("datetime64[Y]")).astype(int)
    dates = dates[(doy > 90) & (doy < 320)]  # no acquisitions in winter
    pairs = [(i, j) for i in range(len(dates)) for j in range(i + 1, min(i + 1 + neighbours, len(dates)))
             if (dates[j] - dates[i]).astype(int) < 100]
    return Network.from_pairs(dates[[p[0] for p in pairs]], dates[[p[1] for p in pairs]])


def _dense_eq3(d: np.ndarray, net: Network, spec: ConstraintSpec, v_ref: float) -> np.ndarray:
    """The paper's formulation in increments m, solved by SVD least squares."""
    t = net.years()
    basis, _ = constraint_basis(t, spec)
    k = basis.shape[1]
    n = net.n_dates - 1
    g = np.zeros((net.n_pairs, n))
    for row, (a, b) in enumerate(zip(net.ref_index, net.sec_index, strict=True)):
        g[row, a:b] = 1.0
    ok = np.isfinite(d)
    g, dd = g[ok], d[ok]
    gam = spec.gamma
    if spec.model == "none":
        a = np.vstack([g, gam * np.eye(n)])
        y = np.concatenate([dd, np.zeros(n)])
        m = np.linalg.lstsq(a, y, rcond=None)[0]
    else:
        # One constraint row per date, the first included (where the cumulative sum is 0).
        cum = np.vstack([np.zeros((1, n)), np.tril(np.ones((n, n)))])
        a = np.vstack([np.hstack([g, np.zeros((len(dd), k))]), np.hstack([gam * cum, -gam * basis])])
        r = v_ref * t if spec.velocity_reference else np.zeros(n + 1)
        y = np.concatenate([dd, gam * r])
        m = np.linalg.lstsq(a, y, rcond=None)[0][:n]
    return np.concatenate([[0.0], np.cumsum(m)])


@pytest.mark.parametrize(
    "spec",
    [
        ConstraintSpec("none"),
        ConstraintSpec("linear"),
        ConstraintSpec("linear_periodic"),
        ConstraintSpec("linear_periodic", velocity_reference=True),
        ConstraintSpec("linear", gamma=1e-2, velocity_reference=True),
    ],
    ids=lambda s: f"{s.model}-vref{int(s.velocity_reference)}-g{s.gamma:g}",
)
def test_banded_solver_equals_dense_eq3(spec):
    rng = np.random.default_rng(1)
    net = _gapped_network()
    assert len(components(net)) == 2  # one winter gap
    n_pix = 40
    truth = np.cumsum(rng.normal(0, 3, (n_pix, net.n_dates)), axis=1)
    truth -= truth[:, :1]
    d = truth[:, net.sec_index] - truth[:, net.ref_index] + rng.normal(0, 0.5, (n_pix, net.n_pairs))
    d[rng.random(d.shape) < 0.25] = np.nan  # each pixel its own set of valid pairs
    v_ref = rng.normal(-5, 3, n_pix)
    out = solve_nsbas(d, net, spec, v_ref)
    for p in range(n_pix):
        expected = _dense_eq3(d[p], net, spec, v_ref[p])
        assert np.allclose(out["displacement"][p], expected, atol=5e-4), p
    assert (out["n_valid"] == np.isfinite(d).sum(axis=1)).all()


def test_solution_within_connected_parts_does_not_depend_on_gamma():
    rng = np.random.default_rng(2)
    net = _gapped_network()
    truth = np.cumsum(rng.normal(0, 3, (30, net.n_dates)), axis=1)
    d = truth[:, net.sec_index] - truth[:, net.ref_index] + rng.normal(0, 0.3, (30, net.n_pairs))
    results = {g: solve_nsbas(d, net, ConstraintSpec("linear_periodic", gamma=g))["displacement"]
               for g in (1e-2, 1e-3, 1e-4, 1e-5, 1e-6)}
    for first, last in components(net):
        for g, disp in results.items():
            inside = disp[:, first : last + 1] - disp[:, first : first + 1]
            ref = results[1e-4][:, first : last + 1] - results[1e-4][:, first : first + 1]
            assert np.abs(inside - ref).max() < 0.05, g  # mm, over the connected part


def test_velocity_reference_sets_the_trend_across_gaps():
    net = _gapped_network(n_years=4)
    t = net.years()
    truth = -10.0 * t  # steady subsidence, mm
    d = np.tile(truth[net.sec_index] - truth[net.ref_index], (3, 1))
    spec = ConstraintSpec("linear_periodic", velocity_reference=True)
    out = solve_nsbas(d, net, spec, np.array([-10.0, -10.0, -10.0]))
    assert np.allclose(out["displacement"], truth, atol=1e-3)
    wrong = solve_nsbas(d, net, spec, np.array([0.0, 0.0, 0.0]))
    assert np.abs(wrong["displacement"][0, -1] - truth[-1]) > 5  # the reference really matters


def test_pixels_with_too_few_interferograms_are_masked():
    net = _gapped_network()
    d = np.zeros((2, net.n_pairs))
    d[1, 3:] = np.nan
    out = solve_nsbas(d, net, ConstraintSpec("linear"), min_valid=10)
    assert np.isfinite(out["displacement"][0]).all()
    assert np.isnan(out["displacement"][1]).all()
    assert out["n_valid"][1] == 3


def test_invert_nsbas_dask_equals_numpy():
    rng = np.random.default_rng(3)
    net = _gapped_network()
    truth = np.cumsum(rng.normal(0, 3, (12, 10, net.n_dates)), axis=-1)
    data = truth[..., net.sec_index] - truth[..., net.ref_index]
    data[rng.random(data.shape) < 0.5] = np.nan  # some epochs untouched at some pixels
    los = xr.DataArray(np.moveaxis(data, -1, 0), dims=("pair", "y", "x"),
                       coords={"reference_date": ("pair", net.dates[net.ref_index]),
                               "secondary_date": ("pair", net.dates[net.sec_index])})
    spec = ConstraintSpec("linear_periodic")
    eager = invert_nsbas(los, spec)
    lazy = invert_nsbas(los.chunk({"pair": -1, "y": 5, "x": 4}), spec).compute()
    xr.testing.assert_allclose(eager["displacement"], lazy["displacement"])
    assert eager["displacement"].dims == ("time", "y", "x")
    for name in ("temporal_coherence", "n_parts", "bridged", "condition", "velocity_std"):
        xr.testing.assert_allclose(eager[name], lazy[name])
    # the per-epoch flags survive their packing through the tile's float32 block
    direct = solve_nsbas(np.moveaxis(data, -1, 0).reshape(net.n_pairs, -1), net, spec,
                         pair_major=True)["bridged"]
    assert np.array_equal(lazy["bridged"].values.reshape(net.n_dates, -1), direct.T)
    assert lazy["bridged"].dtype == np.uint8 and lazy["bridged"].values.any()
    # velocity_std is the standard error of the series' least-squares rate
    from scipy.stats import linregress

    t = net.years()
    for iy, ix in [(0, 0), (5, 3), (11, 9)]:
        fit = linregress(t, eager["displacement"].values[:, iy, ix])
        assert float(eager["velocity_std"][iy, ix]) == pytest.approx(fit.stderr, rel=1e-3)


def _winter_start(n_pix: int = 30, seed: int = 3):
    """A network starting in winter: pairs touching the first dates are invalid at every pixel."""
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2020-01-05") + np.arange(0, 700, 12)
    pairs = [(i, j) for i in range(len(dates)) for j in range(i + 1, min(i + 4, len(dates)))]
    net = Network.from_pairs(dates[[p[0] for p in pairs]], dates[[p[1] for p in pairs]])
    t = net.years()
    truth = -8.0 * t + 15 * np.sin(2 * np.pi * t) + rng.normal(0, 1, (n_pix, net.n_dates))
    d = truth[:, net.sec_index] - truth[:, net.ref_index]
    doy = (net.dates - net.dates.astype("datetime64[Y]")).astype(int)
    winter = (doy < 95) | (doy > 320)
    touches_winter = winter[net.ref_index] | winter[net.sec_index]
    d[:, touches_winter] = np.nan
    d[rng.random(d.shape) < 0.2] = np.nan
    return net, d, truth, winter


@pytest.mark.parametrize("model", ["linear", "linear_periodic"])
def test_winter_start_is_well_posed(model):
    """No valid pair touches the first date: the series must not take an arbitrary offset.

    Before the first date had its own constraint row the normal matrix was singular there and
    the whole series could shift by metres (the offset pixels of issue 7).
    """
    net, d, _, winter = _winter_start()
    spec = ConstraintSpec(model, velocity_reference=True)
    out = solve_nsbas(d, net, spec, np.full(d.shape[0], -8.0))
    assert np.isfinite(out["displacement"]).all()
    assert (out["condition"] < 1e12).all(), out["condition"].max()
    assert np.abs(out["displacement"]).max() < 200  # truth stays within ±60 mm
    for p in range(5):
        expected = _dense_eq3(d[p], net, spec, -8.0)
        assert np.allclose(out["displacement"][p], expected, atol=1e-3)
    # the first dates are bridged at every pixel
    assert out["bridged"][:, 0].all()
    assert (out["bridged"][:, ~winter] == 0).mean() > 0.9


def test_reference_epoch_shifts_the_series_only():
    net, d, _, _ = _winter_start()
    spec = ConstraintSpec("linear_periodic", velocity_reference=True)
    v = np.full(d.shape[0], -8.0)
    first = solve_nsbas(d, net, spec, v)["displacement"]
    ref = 20
    moved = solve_nsbas(d, net, spec, v, reference_epoch=ref)["displacement"]
    assert np.allclose(moved[:, ref], 0.0)
    assert np.allclose(moved, first - first[:, ref : ref + 1], atol=1e-3)


@pytest.mark.parametrize("model", ["none", "linear", "linear_periodic"])
def test_quality_layers_against_brute_force(model):
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    net, d, truth, _ = _winter_start(n_pix=25)
    d_err = d.copy()
    d_err[3, np.flatnonzero(np.isfinite(d[3]))[:5]] += 55.465763 / 2  # a 2π error (mm)
    out = solve_nsbas(d_err, net, ConstraintSpec(model), wavelength_m=0.055465763)
    for p in range(d.shape[0]):
        ok = np.isfinite(d_err[p])
        a, b = net.ref_index[ok], net.sec_index[ok]
        graph = coo_matrix((np.ones(ok.sum()), (a, b)), shape=(net.n_dates, net.n_dates))
        touched = np.zeros(net.n_dates, bool)
        touched[a] = touched[b] = True
        _, labels = connected_components(graph, directed=False)
        assert out["n_parts"][p] == len(np.unique(labels[touched]))
        assert np.array_equal(out["bridged"][p].astype(bool), ~touched)
    # temporal coherence as MintPy defines it, from the solution's own residuals
    res = d_err - (out["displacement"][:, net.sec_index] - out["displacement"][:, net.ref_index])
    phase = 4 * np.pi / 55.465763 * res
    expected = np.abs(np.nanmean(np.exp(1j * phase), axis=1))
    tc = out["temporal_coherence"]
    assert np.allclose(tc, expected, atol=1e-5)
    assert tc[3] < np.median(tc) - 0.05  # the unwrapping error lowers temporal coherence
    assert np.median(tc) > 0.9 and (tc <= 1.0 + 1e-6).all()


def test_quality_mask_sets_one_bit_per_failed_test():
    from talik.config import Sentinel1Options
    from talik.science.quality import FLAG_BITS, quality_mask
    from talik.tasks.sentinel1 import mask_thresholds

    limits = mask_thresholds(Sentinel1Options())  # the study defaults

    n = 6
    times = np.datetime64("2020-01-01") + np.arange(0, 4 * 365, 12).astype("timedelta64[D]")
    good = {"temporal_coherence": 0.95, "bridged_fraction": 0.2, "n_parts": 4, "condition": 1e8,
            "velocity_std": 1.0, "residual_rms": 1.0}
    bad = {"temporal_coherence": 0.5, "bridged_fraction": 0.9, "n_parts": 40, "condition": 1e17,
           "velocity_std": 30.0, "residual_rms": np.nan}
    names = ["low_temporal_coherence", "mostly_bridged", "fragmented_network", "ill_conditioned",
             "uncertain_velocity", "few_interferograms"]
    layers = {}
    for key in good:
        values = np.full((1, n), good[key], dtype=float)
        for col, name in enumerate(names):
            column = {"temporal_coherence": "low_temporal_coherence",
                      "bridged_fraction": "mostly_bridged", "n_parts": "fragmented_network",
                      "condition": "ill_conditioned", "velocity_std": "uncertain_velocity",
                      "residual_rms": "few_interferograms"}[key]
            if column == name:
                values[0, col] = bad[key]
        layers[key] = (("y", "x"), values)
    ds = xr.Dataset({**layers, "displacement": (("time", "y", "x"), np.zeros((times.size, 1, n)))},
                    coords={"time": times})
    mask, flags = quality_mask(ds, limits)
    assert mask.values.sum() == 0
    for col, name in enumerate(names):
        assert flags.values[0, col] == FLAG_BITS[name], name
    ds2 = ds.copy()
    for key in good:
        ds2[key] = xr.full_like(ds[key], good[key])
    assert quality_mask(ds2, limits)[0].values.all()


@pytest.mark.parametrize("model", ["none", "linear", "linear_periodic"])
def test_rate_alone_is_the_full_solves_rate(model):
    """solve_rate (a dot product where every pair is valid) gives solve_nsbas's rate, pixel
    for pixel: complete pixels, pixels with a few pairs missing, too few pairs (NaN)."""
    rng = np.random.default_rng(7)
    net = _gapped_network(n_years=3)
    n_pix = 700
    t = net.years()
    truth = -12.0 * t[None, :] + 5 * np.sin(2 * np.pi * t)[None, :] + rng.normal(0, 2, (n_pix, t.size))
    d = (truth[:, net.sec_index] - truth[:, net.ref_index] + rng.normal(0, 1, (n_pix, net.n_pairs)))
    d = d.astype(np.float32)
    d[100:300][rng.random((200, net.n_pairs)) < 0.2] = np.nan  # some pairs missing
    d[300:320, 5:] = np.nan  # too few pairs left
    d[320:330] = np.nan  # nothing
    d[330, 4] = np.inf  # not finite: solved in full (NaN, as solve_nsbas says)
    spec = ConstraintSpec(model)
    pair_major = np.ascontiguousarray(d.T)
    full = solve_nsbas(pair_major, net, spec, min_valid=10, pair_major=True)["rate"]
    alone = solve_rate(pair_major, net, spec, min_valid=10)
    assert np.isfinite(full[:100]).all() and np.isnan(full[300:330]).all()
    np.testing.assert_array_equal(np.isnan(alone), np.isnan(full))
    # The same least squares summed in another order: equal to rounding, which a weakly
    # constrained linear-periodic fit can lift to ~1e-4 mm/yr (both are as far from an SVD).
    np.testing.assert_allclose(alone, full, rtol=0, atol=2e-3)  # mm/yr
    with pytest.raises(ValueError, match="no velocity reference"):
        solve_rate(pair_major, net, ConstraintSpec("linear", velocity_reference=True))
