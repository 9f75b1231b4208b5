"""Properties of the realistic synthetic generator: its truth is exact and its statistics are real.

The ranges asserted on envelope statistics are those measured on real GHOSTLY sessions (50 ms RMS
envelope of the 20-450 Hz band): rest 3-10 uV, bursts 20-100 x rest, blips 5-20 x rest.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from functools import cache

import numpy as np
import pytest
from scipy import signal

from emg_core.c3d import read_c3d
from emg_core.filters import bandpass, design_bandpass, rms_envelope
from emg_core.synthetic import (
    ChannelTruth,
    RealisticSpec,
    realistic_recording,
    realistic_signals,
)

SEEDS = (0, 1, 2, 3)


@cache
def _signals(seed: int, **kwargs):
    return realistic_signals(seed=seed, **kwargs)


def _envelope(x: np.ndarray, rate: float) -> np.ndarray:
    return rms_envelope(bandpass(x, design_bandpass(rate)), rate, 0.05)


def _quiet(ch: ChannelTruth, n: int, rate: float, margin_s: float = 0.3) -> np.ndarray:
    """Samples at least ``margin_s`` from every burst, weak effort, blip and dropout (and the
    file's edges)."""
    quiet = np.ones(n, dtype=bool)
    edge = round(margin_s * rate)
    quiet[:edge] = quiet[n - edge :] = False
    spans = [(b.start_s, b.end_s) for b in ch.bursts + ch.efforts + ch.blips]
    spans += [(d.start_s, d.end_s) for d in ch.dropouts]
    for start, end in spans:
        quiet[max(0, round((start - margin_s) * rate)) : round((end + margin_s) * rate)] = False
    return quiet


def test_same_seed_same_recording_other_seed_other_recording():
    labels, data, truth = realistic_signals(seed=7, duration_s=30)
    labels2, data2, truth2 = realistic_signals(seed=7, duration_s=30)
    assert labels == labels2 == ("CH1 Raw", "CH2 Raw", "CH1 activated", "CH2 activated")
    assert np.array_equal(data, data2)
    assert truth == truth2
    _, data3, truth3 = realistic_signals(seed=8, duration_s=30)
    assert not np.array_equal(data, data3)
    assert truth.bursts != truth3.bursts
    # the channels of one recording are independent draws, not copies
    first, second = truth.details
    assert [b.start_s for b in first.bursts] != [b.start_s for b in second.bursts]
    assert first.rest.level_v != second.rest.level_v


def test_switching_a_phenomenon_off_leaves_the_others_draws_alone():
    _, _, base = _signals(1)
    offs = (
        {"blip_rate": 0.0},
        {"hum_x_rest": 0.0},
        {"dropouts": 0},
        {"flicker_sigma": 0.0},
        {"effort_rate": 0.0},
    )
    for off in offs:
        _, _, other = realistic_signals(seed=1, **off)
        for a, b in zip(base.details, other.details, strict=True):
            assert a.bursts == b.bursts, off
            assert a.rest == replace(b.rest, flicker_sigma=a.rest.flicker_sigma), off
            if "dropouts" not in off and "effort_rate" not in off:
                assert a.dropouts == b.dropouts, off
        assert other.details[0].blips == () if "blip_rate" in off else other.details[0].blips
        assert (other.details[0].hum is None) == ("hum_x_rest" in off)
        assert (other.details[0].efforts == ()) == ("effort_rate" in off)


@pytest.mark.parametrize("seed", SEEDS)
def test_bursts_sorted_apart_in_the_recording_and_clustered_as_configured(seed):
    _, _, truth = _signals(seed)
    assert len(truth.details) == 2
    for ch in truth.details:
        spec, bursts = ch.spec, ch.bursts
        assert len(bursts) >= 15  # 90 s of a session: a real one holds 6-34 bursts per minute
        assert [b.index for b in bursts] == list(range(len(bursts)))
        assert all(b.channel == ch.label for b in bursts)
        assert bursts[0].start_s >= spec.lead_s
        assert bursts[-1].end_s <= truth.duration_s - 1.0
        assert len(ch.clusters) == len(bursts)
        assert ch.clusters == tuple(sorted(ch.clusters))
        sizes = np.bincount(ch.clusters)
        assert sizes.min() >= 1 and sizes.max() <= spec.cluster_size[1]
        for a, b in itertools.pairwise(bursts):
            gap = b.start_s - a.end_s
            same = ch.clusters[a.index] == ch.clusters[b.index]
            low, high = spec.intra_gap_s if same else spec.inter_gap_s
            assert low <= gap <= high, (a, b)
        for b in bursts:
            short = spec.burst_s[0] <= b.duration_s <= spec.burst_s[1]
            hold = spec.hold_s[0] <= b.duration_s <= spec.hold_s[1]
            assert short or hold
            assert spec.ramp_s[0] <= b.ramp_s * (1 + 1e-12) or b.ramp_s == b.duration_s / 3
            assert b.ramp_s <= b.duration_s / 3 + 1e-12
            contrast = b.amplitude / ch.rest.level_v
            assert spec.contrast[0] * (1 - 1e-9) <= contrast <= spec.contrast[1] * (1 + 1e-9)
        assert ch.mvc_v == max(b.amplitude for b in bursts)
    assert truth.mvc == {ch.label: ch.mvc_v for ch in truth.details}
    assert truth.bursts == truth.details[0].bursts + truth.details[1].bursts


def test_long_holds_come_at_the_configured_share():
    holds = total = 0
    for seed in range(6):
        _, _, truth = realistic_signals(seed=seed, duration_s=120, hold_share=0.3, dropouts=0)
        for ch in truth.details:
            holds += sum(b.duration_s >= 2.0 for b in ch.bursts)
            total += len(ch.bursts)
    assert 0.2 <= holds / total <= 0.4
    _, _, none = realistic_signals(seed=0, hold_share=0.0)
    assert max(b.duration_s for b in none.bursts) <= 1.5


@pytest.mark.parametrize("seed", SEEDS)
def test_dropouts_sit_exactly_at_the_rail_over_exactly_their_span_in_rest(seed):
    _, data, truth = _signals(seed)
    rate = truth.rate
    for c, ch in enumerate(truth.details):
        x = data[c]
        rail = np.float32(-0.0055)
        assert len(ch.dropouts) == 2
        assert np.count_nonzero(x == rail) == sum(
            d.end_sample - d.start_sample for d in ch.dropouts
        )
        for d in ch.dropouts:
            assert d.rail_v == rail
            assert np.all(x[d.start_sample : d.end_sample] == rail)
            assert x[d.start_sample - 1] != rail and x[d.end_sample] != rail
            assert d.start_s == d.start_sample / rate and d.end_s == d.end_sample / rate
            assert 0.2 * rate - 1 <= d.end_sample - d.start_sample <= 0.35 * rate + 1
            assert d.burst_index is None
            assert d.start_s >= ch.spec.lead_s
            for b in ch.bursts:  # in rest, clear of every burst
                assert d.end_s <= b.start_s - 0.3 or d.start_s >= b.end_s + 0.3


def test_a_dropout_can_be_put_over_a_burst():
    _, data, truth = realistic_signals(seed=2, dropout_over_burst=True, dropouts=3)
    for c, ch in enumerate(truth.details):
        over = [d for d in ch.dropouts if d.burst_index is not None]
        assert len(over) == 1 and len(ch.dropouts) == 3
        d, b = over[0], ch.bursts[over[0].burst_index]
        assert b.start_s + b.ramp_s < d.start_s < d.end_s < b.end_s - b.ramp_s
        assert np.all(data[c, d.start_sample : d.end_sample] == d.rail_v)


def test_the_baseline_steps_after_a_dropout_by_the_truth():
    _, data, truth = realistic_signals(
        seed=4, dropout_step_v=1e-3, hum_x_rest=0.0, blip_rate=0.0, dropouts=3
    )
    for c, ch in enumerate(truth.details):
        steps = [d.baseline_step_v for d in ch.dropouts]
        assert max(abs(s) for s in steps) > 1e-4  # the draw is in +-1 mV: some are large
        for d in ch.dropouts:
            before = np.median(data[c, d.start_sample - 200 : d.start_sample])
            after = np.median(data[c, d.end_sample : d.end_sample + 200])
            assert after - before == pytest.approx(d.baseline_step_v, abs=5e-6)
        assert np.median(data[c, : round(ch.spec.lead_s * truth.rate)]) == pytest.approx(
            ch.dc_v, abs=3e-6
        )


@pytest.mark.parametrize("hum_hz", [49.5, 50.3])
def test_the_hum_is_the_psd_peak_at_its_true_frequency(hum_hz):
    _, data, truth = realistic_signals(seed=3, hum_hz=hum_hz, hum_x_rest=5.0)
    for c, ch in enumerate(truth.details):
        assert ch.hum.frequency_hz == hum_hz
        assert ch.hum.lines_hz == pytest.approx((hum_hz, 2 * hum_hz, 3 * hum_hz))
        assert ch.hum.line_rms_v[0] > ch.hum.line_rms_v[1] > ch.hum.line_rms_v[2]
        assert np.sqrt(np.sum(np.square(ch.hum.line_rms_v))) == pytest.approx(ch.hum.rms_v)
        assert ch.hum.rms_v == pytest.approx(5.0 * ch.rest.level_v)
        f, p = signal.welch(data[c], fs=truth.rate, nperseg=2**14)
        band = (f >= 20) & (f <= 450)
        assert abs(f[band][np.argmax(p[band])] - hum_hz) <= 0.2


def test_a_hum_dominated_channel_has_its_share_of_the_in_band_power():
    _, data, truth = realistic_signals(
        seed=5, hum_fraction=0.53, hum_harmonics=5, dropouts=0, clip_v=5.5e-3
    )
    for c, ch in enumerate(truth.details):
        assert ch.hum.fraction == pytest.approx(0.53)
        assert len(ch.hum.lines_hz) == 5
        f, p = signal.welch(data[c], fs=truth.rate, nperseg=2**14)
        band = (f >= 20) & (f <= 450)
        lines = band & np.any([np.abs(f - h) <= 0.5 for h in ch.hum.lines_hz], axis=0)
        assert p[lines].sum() / p[band].sum() == pytest.approx(0.53, abs=0.05)


@pytest.mark.parametrize("seed", SEEDS)
def test_blips_lie_in_rest_away_from_bursts_and_dropouts(seed):
    _, _, truth = _signals(seed)
    for ch in truth.details:
        assert len(ch.blips) >= 5  # 0.4 per second of eligible rest
        assert [b.center_s for b in ch.blips] == sorted(b.center_s for b in ch.blips)
        for blip in ch.blips:
            assert 0.02 <= blip.width_s <= 0.15 and 5.0 <= blip.height <= 20.0
            assert blip.peak_v == pytest.approx(
                float(ch.rest.at(blip.center_s)) * np.sqrt(blip.height**2 - 1)
            )
            for b in [*ch.bursts, *ch.dropouts]:
                assert blip.end_s <= b.start_s - 0.3 or blip.start_s >= b.end_s + 0.3


@pytest.mark.parametrize("seed", SEEDS)
def test_weak_efforts_lie_in_rest_at_a_fraction_of_the_strongest_burst(seed):
    _, _, truth = _signals(seed)
    for ch in truth.details:
        assert [e.start_s for e in ch.efforts] == sorted(e.start_s for e in ch.efforts)
        for e in ch.efforts:
            assert 0.1 <= e.amplitude / ch.mvc_v <= 0.24
            for b in ch.bursts:
                assert e.end_s <= b.start_s - 1.0 or e.start_s >= b.end_s + 1.0
            for d in [*ch.dropouts, *ch.blips]:
                assert e.end_s <= d.start_s - 0.3 or e.start_s >= d.end_s + 0.3
        for a, b in zip(ch.efforts, ch.efforts[1:], strict=False):
            assert b.start_s >= a.end_s + 1.0
    assert sum(len(ch.efforts) for ch in truth.details) >= 1


def test_weak_efforts_come_at_about_the_real_sessions_rate():
    counts = [len(ch.efforts) for seed in SEEDS for ch in _signals(seed)[2].details]
    # real clean channels hold 0-13 weak efforts, 4 on average
    assert 1.0 <= np.mean(counts) <= 6.0, counts


def test_envelope_statistics_fall_in_the_ranges_of_real_sessions():
    rest_levels, contrasts, heights, flicker = [], [], [], []
    for seed in SEEDS:
        _, data, truth = _signals(seed)
        rate = truth.rate
        for c, ch in enumerate(truth.details):
            env = _envelope(data[c], rate)
            quiet = _quiet(ch, env.size, rate)
            rest = float(np.median(env[quiet]))
            rest_levels.append(rest)
            for b in ch.bursts:
                i0, i1 = round((b.start_s + b.ramp_s) * rate), round((b.end_s - b.ramp_s) * rate)
                contrasts.append(float(np.median(env[i0:i1])) / rest)
            for blip in ch.blips:
                i0, i1 = round(blip.start_s * rate), round(blip.end_s * rate)
                local = float(ch.rest.at(blip.center_s))
                heights.append(float(env[i0 : i1 + 1].max()) / local)
            # the rest's non-stationarity: SD of ln(envelope) within 2 s stretches of rest
            w = round(2 * rate)
            for s in range(0, env.size - w, w):
                if quiet[s : s + w].all():
                    flicker.append(float(np.std(np.log(env[s : s + w]))))
    rest_uv = np.array(rest_levels) * 1e6
    # real sessions: median rest 3-10 uV (2.7-9.5 uV in quiet 2 s windows)
    assert rest_uv.min() >= 2.0 and rest_uv.max() <= 12.0, rest_uv
    # real bursts: 100-500 uV; plateau / rest 5th, 50th, 95th percentiles 23, 41, 77 x
    assert np.percentile(contrasts, 5) >= 15.0 and np.percentile(contrasts, 95) <= 110.0
    assert 30.0 <= np.median(contrasts) <= 55.0
    # real blips: 5-20 x rest (per-channel medians 6-9 x, 90th percentiles 13-22 x)
    assert np.percentile(heights, 5) >= 4.0 and np.percentile(heights, 95) <= 25.0
    assert 7.0 <= np.median(heights) <= 14.0
    # real rest is non-stationary: SD of ln(envelope) within 2 s of rest 0.15-0.45
    assert 0.15 <= np.median(flicker) <= 0.45


def test_rest_level_truth_is_the_rms_of_the_rest_it_drifts_and_steps():
    # no flicker: its unit mean square only holds on average, this checks the curve itself
    _, data, truth = realistic_signals(
        seed=6,
        hum_x_rest=0.0,
        blip_rate=0.0,
        flicker_sigma=0.0,
        rest_step_factor=(0.5, 0.5),
        drift_sigma=0.4,
        dropouts=0,
    )
    rate = truth.rate
    t = np.arange(truth.n_samples) / rate
    for c, ch in enumerate(truth.details):
        ((when, factor),) = ch.rest.steps
        assert factor in (0.5, 2.0)
        # the level jumps by the factor at the step
        assert ch.rest.at(when + 1e-6) / ch.rest.at(when - 1e-6) == pytest.approx(factor, rel=1e-3)
        level = ch.rest.at(t)
        assert level.max() / level.min() > 2.0  # it drifts and steps a lot ...
        y = bandpass(data[c], design_bandpass(rate))
        quiet = _quiet(ch, y.size, rate)
        ratios = []
        w = round(1.0 * rate)
        for s in range(0, y.size - w, w):
            seg = slice(s, s + w)
            if quiet[seg].all():
                ratios.append(np.sqrt(np.mean(y[seg] ** 2) / np.mean(level[seg] ** 2)))
        assert len(ratios) >= 10
        # ... and the in-band RMS of the rest follows it, before and after the step
        assert np.percentile(ratios, 10) >= 0.9 and np.percentile(ratios, 90) <= 1.1
        for side in (t < when, t >= when):
            pooled = np.sqrt(np.mean(y[quiet & side] ** 2) / np.mean(level[quiet & side] ** 2))
            assert pooled == pytest.approx(1.0, abs=0.05)


def test_flicker_keeps_the_rest_rms_on_average():
    _, data, truth = realistic_signals(seed=6, hum_x_rest=0.0, blip_rate=0.0, dropouts=0)
    t = np.arange(truth.n_samples) / truth.rate
    for c, ch in enumerate(truth.details):
        y = bandpass(data[c], design_bandpass(truth.rate))
        quiet = _quiet(ch, y.size, truth.rate)
        pooled = np.sqrt(np.mean(y[quiet] ** 2) / np.mean(ch.rest.at(t[quiet]) ** 2))
        assert pooled == pytest.approx(1.0, abs=0.2)


def test_plateau_rms_is_the_burst_amplitude():
    _, data, truth = realistic_signals(seed=9, hum_x_rest=0.0)
    rate = truth.rate
    for c, ch in enumerate(truth.details):
        y = bandpass(data[c], design_bandpass(rate))
        errors = []
        for b in ch.bursts:
            i0, i1 = round((b.start_s + b.ramp_s) * rate), round((b.end_s - b.ramp_s) * rate)
            if i1 - i0 >= 0.3 * rate:
                plateau = np.sqrt(np.mean(y[i0:i1] ** 2))
                errors.append(plateau / b.amplitude - 1)
        assert len(errors) >= 10
        assert abs(np.median(errors)) <= 0.05 and np.max(np.abs(errors)) <= 0.25


def test_a_weak_channel_from_a_per_channel_spec_leaves_the_other_alone():
    weak = RealisticSpec(contrast=(3.0, 4.0))
    _, _, truth = realistic_signals(seed=1, spec=(RealisticSpec(), weak))
    _, _, base = _signals(1)
    assert truth.details[0] == base.details[0]
    ch = truth.details[1]
    assert ch.spec.contrast == (3.0, 4.0)
    assert all(3.0 <= b.amplitude / ch.rest.level_v <= 4.0 + 1e-9 for b in ch.bursts)
    with pytest.raises(ValueError, match="channel specs"):
        realistic_signals(spec=(weak,), n_channels=2)
    with pytest.raises(ValueError, match="burst_s"):
        RealisticSpec(burst_s=(1.5, 0.3))
    with pytest.raises(TypeError):
        realistic_signals(no_such_parameter=1)


def test_clipping_holds_the_signal_at_the_clip_value():
    clip = 150e-6
    _, data, truth = realistic_signals(seed=2, clip_v=clip, duration_s=40)
    for c, ch in enumerate(truth.details):
        x = data[c].copy()
        for d in ch.dropouts:
            x[d.start_sample : d.end_sample] = 0.0
        assert np.abs(x).max() == clip
        assert ch.clipped_samples == np.count_nonzero(np.abs(x) == clip) > 100


def test_the_file_reads_back_with_the_same_samples():
    content, truth = realistic_recording(seed=0, duration_s=45)
    labels, data, _ = realistic_signals(seed=0, duration_s=45)
    rec = read_c3d(content)
    assert rec.labels == labels
    assert rec.rate == truth.rate and rec.n_samples == truth.n_samples == data.shape[1]
    for i in range(len(labels)):
        assert np.array_equal(rec.channel(i), data[i].astype(np.float32).astype(np.float64))
    for c, ch in enumerate(truth.details):
        for d in ch.dropouts:
            assert np.all(rec.channel(c)[d.start_sample : d.end_sample] == d.rail_v)
