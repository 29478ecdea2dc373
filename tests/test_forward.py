"""The forward update of NSBAS series (new dates solved against the kept ones) against truth.

A synthetic network (12-day revisit, each date paired with its next three, per-pixel random
decorrelation) is inverted whole, and also up to a cut date then forward. The forward epochs
must match truth as well as the whole inversion does, at the worst pixel too, for every
constraint model; with exact data they are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from talik.science.forward import ForwardNetwork, solve_forward
from talik.science.inversion import ConstraintSpec, solve_nsbas
from talik.science.network import Network
from talik.science.temporal import decimal_years

N_DATES, CUT, N_PIX = 60, 52, 3000
WAVELENGTH = 0.055465763


def _world(noise_mm: float, nan_fraction: float, seed: int = 1):
    rng = np.random.default_rng(seed)
    dates = np.datetime64("2019-05-03") + np.arange(N_DATES) * np.timedelta64(12, "D")
    ref, sec = [], []
    for i in range(N_DATES):
        for j in range(i + 1, min(i + 4, N_DATES)):
            ref.append(dates[i])
            sec.append(dates[j])
    ref, sec = np.array(ref), np.array(sec)
    t = decimal_years(dates)
    rate = rng.uniform(-30, 5, N_PIX)  # mm/yr, subsiding mostly (negative: away from satellite)
    amp = rng.uniform(0, 15, N_PIX)
    truth = rate[:, None] * t[None, :] - amp[:, None] * (1 - np.cos(2 * np.pi * t))[None, :]
    truth -= truth[:, :1]
    ri = np.searchsorted(dates, ref)
    si = np.searchsorted(dates, sec)
    ifg = truth[:, si] - truth[:, ri] + rng.normal(0, noise_mm, (N_PIX, ref.size))
    ifg[rng.random(ifg.shape) < nan_fraction * rng.random((N_PIX, 1)) * 2] = np.nan
    return dates, ref, sec, truth, ifg.astype(np.float32), rate


def _kept_and_forward(spec: ConstraintSpec, noise: float, nan_fraction: float):
    dates, ref, sec, truth, ifg, rate = _world(noise, nan_fraction)
    v_ref = rate + np.random.default_rng(2).normal(0, 0.5, N_PIX) if spec.velocity_reference \
        else None
    whole = solve_nsbas(ifg, Network.from_pairs(ref, sec), spec, v_ref)
    old = sec <= dates[CUT - 1]
    kept = solve_nsbas(ifg[:, old], Network.from_pairs(ref[old], sec[old]), spec, v_ref)
    net = ForwardNetwork.of(dates[:CUT], ref[~old], sec[~old])
    kd = kept["displacement"].T  # (N, P)
    quality = {"n_valid_ifg": kept["n_valid"], "residual_rms": kept["residual_rms"],
               "temporal_coherence": kept["temporal_coherence"], "n_parts": kept["n_parts"],
               "bridged_fraction": kept["bridged_fraction"], "condition": kept["condition"]}
    fwd = solve_forward(
        np.ascontiguousarray(ifg[:, ~old].T), net, spec, kd[net.kept_needed], kd[0], kd[-1],
        kept["params"].T if spec.model != "none" else None, v_ref, quality, ref.size, 0.0,
        WAVELENGTH)
    return truth, whole, kept, fwd


def _rms(a: np.ndarray) -> float:
    return float(np.sqrt(np.nanmean(a ** 2)))


SPECS = [ConstraintSpec("none", 1e-4), ConstraintSpec("linear", 1e-4),
         ConstraintSpec("linear_periodic", 1e-4),
         ConstraintSpec("linear_periodic", 1e-4, velocity_reference=True)]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.model}{'_vref' if s.velocity_reference else ''}")
def test_forward_epochs_are_exact_on_exact_data(spec):
    truth, whole, _, fwd = _kept_and_forward(spec, noise=0.0, nan_fraction=0.0)
    assert fwd["solved"].all()
    np.testing.assert_allclose(fwd["displacement"].T, truth[:, CUT:], atol=2e-3)
    np.testing.assert_allclose(fwd["displacement"].T, whole["displacement"][:, CUT:], atol=2e-3)
    assert (fwd["bridged"] == 0).all()
    assert (fwd["n_valid_ifg"] == whole["n_valid"]).all()
    assert np.nanmax(fwd["residual_rms"]) < 1e-3
    assert np.nanmin(fwd["temporal_coherence"]) > 0.999


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.model}{'_vref' if s.velocity_reference else ''}")
def test_forward_epochs_match_truth_as_well_as_a_whole_inversion(spec):
    truth, whole, kept, fwd = _kept_and_forward(spec, noise=2.0, nan_fraction=0.15)
    new_truth = truth[:, CUT:]
    # Errors relative to the last kept date: the forward update's past is the kept series.
    err_fwd = (fwd["displacement"].T - kept["displacement"][:, -1:]) - (
        new_truth - truth[:, CUT - 1:CUT])
    err_whole = (whole["displacement"][:, CUT:] - whole["displacement"][:, CUT - 1:CUT]) - (
        new_truth - truth[:, CUT - 1:CUT])
    solved = fwd["solved"] & np.isfinite(whole["residual_rms"])
    assert solved.mean() > 0.95
    rms_fwd, rms_whole = _rms(err_fwd[solved]), _rms(err_whole[solved])
    worst_fwd = float(np.nanmax(np.abs(err_fwd[solved])))
    worst_whole = float(np.nanmax(np.abs(err_whole[solved])))
    print(f"\n{spec.model} vref={spec.velocity_reference}: forward RMSE {rms_fwd:.2f} mm "
          f"(worst {worst_fwd:.1f}), whole {rms_whole:.2f} mm (worst {worst_whole:.1f})")
    assert rms_fwd <= 1.25 * rms_whole + 0.2
    assert worst_fwd <= 1.5 * worst_whole + 2.0
    # The quality layers carried over: counts exact; the RMS never below the whole's (which
    # minimises it) and within 25 % of it at every pixel; the coherence close to the whole's.
    np.testing.assert_array_equal(fwd["n_valid_ifg"][solved], whole["n_valid"][solved])
    rms_ratio = fwd["residual_rms"][solved] / whole["residual_rms"][solved]
    assert rms_ratio.min() > 0.999 and rms_ratio.max() < 1.25
    assert np.nanmax(np.abs(fwd["temporal_coherence"][solved]
                            - whole["temporal_coherence"][solved])) < 0.03


def test_a_new_date_no_valid_pair_touches_is_bridged_by_the_kept_model():
    spec = ConstraintSpec("linear", 1e-4)
    dates, ref, sec, truth, ifg, _ = _world(0.0, 0.0)
    old = sec <= dates[CUT - 1]
    kept = solve_nsbas(ifg[:, old], Network.from_pairs(ref[old], sec[old]), spec)
    net = ForwardNetwork.of(dates[:CUT], ref[~old], sec[~old])
    new = np.ascontiguousarray(ifg[:, ~old].T)
    last = net.new_dates[-1]
    new[sec[~old] == last] = np.nan  # the last date loses every pair at every pixel
    kd = kept["displacement"].T
    q = {"n_valid_ifg": kept["n_valid"], "residual_rms": kept["residual_rms"],
         "temporal_coherence": kept["temporal_coherence"], "n_parts": kept["n_parts"],
         "bridged_fraction": kept["bridged_fraction"], "condition": kept["condition"]}
    fwd = solve_forward(new, net, spec, kd[net.kept_needed], kd[0], kd[-1], kept["params"].T,
                        None, q, ref.size, 0.0, WAVELENGTH)
    assert (fwd["bridged"][-1] == 1).all() and (fwd["bridged"][:-1] == 0).all()
    # Bridged by the kept linear model: offset + rate·t (first-date frame), here exact data.
    t = decimal_years(np.array([dates[0], last]))[1]
    model = kept["params"][:, 0] + kept["params"][:, 1] * t + kd[0]
    np.testing.assert_allclose(fwd["displacement"][-1], model, rtol=1e-5, atol=1e-3)
    assert (fwd["bridged_fraction"] > kept["bridged_fraction"]).all()


def test_pairs_that_would_revise_the_past_are_refused():
    dates = np.datetime64("2020-01-01") + np.arange(5) * np.timedelta64(12, "D")
    with pytest.raises(ValueError, match="revise the past"):
        ForwardNetwork.of(dates[:4], dates[[1]], dates[[3]])
    with pytest.raises(ValueError, match="not one of the kept dates"):
        ForwardNetwork.of(dates[:4], [np.datetime64("2020-01-02")], dates[[4]])
