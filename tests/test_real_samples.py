"""Detection on real GHOSTLY sessions, judged by bench/realcheck.py; and the judge's own tests.

The real recordings carry no licence, so they never enter the repository: the tests on them run
on the folder named by ``EMGD_REAL_SAMPLES`` and skip without it. No number cut from them is a
constant here; every expectation is one of the definitions in ``bench/realcheck.py``
(docs/validation.md), the same ones ``bench/validate_real.py`` prints.

The judge's unit tests below run everywhere, on small arrays built here: a judge nobody tests
would pass or fail the detector for its own bugs.

``bench`` is imported as a namespace package from the repository root, which pytest already puts
on ``sys.path`` for the ``tests`` package (as ``from tests import dbutil`` relies on).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from bench import realcheck as rc

ENV = "EMGD_REAL_SAMPLES"
SKIP_REASON = "set EMGD_REAL_SAMPLES to a folder holding the public GHOSTLY sample sessions"
FOLDER = os.environ.get(ENV)
FILES = sorted(Path(FOLDER).glob("*.c3d")) if FOLDER else []

real = pytest.mark.skipif(not FOLDER, reason=SKIP_REASON)
# with the folder unset one placeholder parameter carries the skip (an empty list would be
# reported as "got empty parameter set" instead of the reason above)
per_file = pytest.mark.parametrize(
    "path", FILES or [None], ids=[p.name for p in FILES] if FILES else ["no-folder"]
)


@functools.cache
def _session(path: Path) -> tuple[tuple[object, rc.Verdict], ...]:
    import emg_core

    result = emg_core.analyze(path)
    data = rc.load_channels(path, [c.name for c in result.channels])
    return tuple(
        (ch, rc.judge(ch, data[ch.name].raw, data[ch.name].activated, data[ch.name].rate))
        for ch in result.channels
    )


def _verdicts(path: Path | None) -> list[rc.Verdict]:
    if not FILES:
        pytest.fail(f"{ENV}={FOLDER} holds no .c3d files")
    return [v for _, v in _session(path)]


# --------------------------------------------------------------------------------------------
# the real sessions


@real
@per_file
def test_counts_on_clean_channels_are_within_tolerance_of_the_game(path):
    bad = [
        f"{v.name}: ours {v.ours}, game {v.game} (plausible {v.game_range[0]}-{v.game_range[1]})"
        for v in _verdicts(path)
        if v.clean and v.game is not None and not v.within_tolerance
    ]
    assert not bad, "count outside max(2, 20 %) of the game's: " + "; ".join(bad)


@real
@per_file
def test_no_contraction_lies_on_rest(path):
    bad = [f"{v.name}: contractions {list(v.on_rest)}" for v in _verdicts(path) if v.on_rest]
    assert not bad, "contractions whose reference envelope never leaves rest: " + "; ".join(bad)


@real
@per_file
def test_no_contraction_spans_a_rest_stretch(path):
    bad = [
        f"{v.name}: contractions {list(v.spanning_rest)}"
        for v in _verdicts(path)
        if v.spanning_rest
    ]
    assert not bad, "contractions holding >= 1 s of rest (two bursts joined): " + "; ".join(bad)


@real
@per_file
def test_no_contraction_or_mvc_window_on_dropout(path):
    bad = []
    for v in _verdicts(path):
        if v.on_dropout:
            bad.append(f"{v.name}: contractions {list(v.on_dropout)} overlap stuck samples")
        if v.mvc_on_dropout:
            bad.append(f"{v.name}: the MVC window overlaps stuck samples")
        if v.mvc_window_missing:
            bad.append(f"{v.name}: estimated MVC without its window (cannot be checked)")
    assert not bad, "; ".join(bad)


@real
@per_file
def test_hum_channels_are_cleaned_or_flagged(path):
    bad = [
        f"{ch.name}: judge's hum {v.judge_hum_fraction:.0%}, ours {ch.mains_fraction:.0%}, "
        f"mains_removed {ch.mains_removed}, usable {ch.usable}, warnings {list(ch.warnings)}"
        for ch, v in (_session(path) if FILES else [])
        if not v.hum_handled
    ]
    _verdicts(path)  # the empty-folder failure, when it is one
    assert not bad, "hum channels neither cleaned nor flagged: " + "; ".join(bad)


# --------------------------------------------------------------------------------------------
# the judge itself, on arrays built here

RATE = 1000.0


def _noise(n: int, seed: int = 0, sd: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, sd, n)


def test_stuck_runs_are_twenty_or_more_identical_samples():
    x = _noise(2000)
    x[100:119] = 0.5  # 19: too short to be stuck
    x[300:320] = 0.5  # 20
    x[700:760] = -2.0
    x[1975:] = 3.0  # 25, up to the end
    starts, ends = rc.stuck_runs(x)
    assert list(zip(starts.tolist(), ends.tolist(), strict=True)) == [
        (300, 320),
        (700, 760),
        (1975, 2000),
    ]


def test_a_constant_channel_is_one_stuck_run_and_live_noise_none():
    starts, ends = rc.stuck_runs(np.full(500, 7.0))
    assert (starts.tolist(), ends.tolist()) == ([0], [500])
    assert rc.stuck_runs(_noise(50_000))[0].size == 0
    assert rc.stuck_runs(np.zeros(10))[0].size == 0  # shorter than a run


def test_repair_stuck_interpolates_between_the_neighbours():
    x = np.arange(100, dtype=float)
    x[40:70] = 500.0
    stuck = rc.runs_mask(x.size, *rc.stuck_runs(x))
    assert stuck[40:70].all() and stuck.sum() == 30
    assert np.allclose(rc.repair_stuck(x, stuck), np.arange(100))


def _activated(n: int, *runs_s: tuple[float, float]) -> np.ndarray:
    a = np.zeros(n)
    for start, end in runs_s:
        a[round(start * RATE) : round(end * RATE)] = 3e-5  # the game writes amplitudes, not 1
    return a


def test_game_count_merges_short_gaps_and_drops_short_runs():
    a = _activated(
        12_000,
        (1.0, 1.3),
        (1.45, 1.75),  # 150 ms gap: one contraction
        (3.0, 3.3),
        (3.55, 3.85),  # 250 ms gap: two
        (5.0, 5.08),  # 80 ms alone: dropped
        (7.0, 7.06),
        (7.1, 7.16),  # two 60 ms runs 40 ms apart: one of 160 ms, kept
    )
    assert rc.game_count(a, RATE) == 4
    starts, ends = rc.game_events(a, RATE)
    assert (starts[0], ends[0]) == (1000, 1750)


def test_game_count_merges_a_gap_of_exactly_the_merge_gap_as_agreement_does():
    assert rc.game_count(_activated(5000, (1.0, 1.3), (1.5, 1.8)), RATE) == 1  # 200 ms
    assert rc.game_count(_activated(5000, (1.0, 1.3), (1.501, 1.8)), RATE) == 2  # 201 ms


def test_game_count_ignores_zero_negative_and_nan_samples():
    a = _activated(5000, (1.0, 1.5))
    a[3000:3500] = -1.0
    a[4000:4500] = np.nan
    assert rc.game_count(a, RATE) == 1


def test_game_count_range_covers_the_plausible_rules():
    # 300 ms apart: two at a 0.2 s merge gap, one at 0.5 s; a 70 ms blip counts only below 0.1 s
    a = _activated(8000, (1.0, 1.3), (1.6, 1.9), (5.0, 5.07))
    assert rc.game_count(a, RATE) == 2
    assert rc.game_count_range(a, RATE) == (1, 3)


@pytest.mark.parametrize(
    ("ours", "game", "ok"),
    [
        (10, 12, True),
        (10, 13, False),
        (0, 2, True),
        (0, 3, False),
        (60, 50, True),  # 20 % of the game's 50
        (61, 50, False),
        (None, 0, False),
    ],
)
def test_within_tolerance_is_two_or_twenty_percent(ours, game, ok):
    assert rc.within_tolerance(ours, game) is ok


def _bursty_envelope(n: int, *bursts_s: tuple[float, float]) -> np.ndarray:
    env = np.ones(n)
    for start, end in bursts_s:
        env[round(start * RATE) : round(end * RATE)] = 10.0
    return env


def test_a_contraction_spans_rest_only_with_a_full_second_of_rest_inside():
    env = _bursty_envelope(
        30_000,
        (2.0, 3.0),
        (4.2, 5.2),  # 1.2 s of rest between: two bursts
        (8.0, 9.0),
        (10.0, 11.0),  # exactly 1 s
        (14.0, 15.0),
        (15.95, 16.95),  # 0.95 s: bridging blips must not stretch it to a second
    )
    rest = rc.rest_level(env)
    assert rest == 1.0
    at_rest = rc.rest_mask(env, rest, RATE)
    assert rc.spans_rest(at_rest, RATE, 2000, 5200)
    assert rc.spans_rest(at_rest, RATE, 8000, 11000)
    assert not rc.spans_rest(at_rest, RATE, 14000, 16950)
    assert not rc.spans_rest(at_rest, RATE, 2000, 3000)


def test_a_blip_of_up_to_100_ms_does_not_break_a_rest_stretch():
    env = _bursty_envelope(10_000, (1.0, 2.0), (3.2, 4.2))  # 1.2 s of rest
    env[2500] = 5.0  # one noisy envelope sample
    env[2700:2800] = 5.0  # 100 ms, an ECG beat say
    at_rest = rc.rest_mask(env, 1.0, RATE)
    assert rc.longest_rest(at_rest, 1000, 4200) == 1200
    assert rc.spans_rest(at_rest, RATE, 1000, 4200)
    env[2700:2801] = 5.0  # 101 ms: activity
    at_rest = rc.rest_mask(env, 1.0, RATE)
    assert not rc.spans_rest(at_rest, RATE, 1000, 4200)


def test_activity_at_the_recording_edge_is_not_bridged():
    env = _bursty_envelope(5000, (0.0, 0.05), (1.03, 2.0))  # 0.98 s of rest between
    at_rest = rc.rest_mask(env, 1.0, RATE)
    assert rc.longest_rest(at_rest, 0, 1030) == 980
    assert not rc.spans_rest(at_rest, RATE, 0, 1030)


def test_lies_on_rest_means_never_above_three_times_rest():
    env = _bursty_envelope(10_000, (4.0, 5.0))
    assert rc.lies_on_rest(env, 1.0, 1000, 2000)
    assert not rc.lies_on_rest(env, 1.0, 3500, 4100)
    env[1500] = 3.0  # at the limit, not above it
    assert rc.lies_on_rest(env, 1.0, 1000, 2000)
    env[1500] = 3.01
    assert not rc.lies_on_rest(env, 1.0, 1000, 2000)


def test_rest_level_leaves_out_the_masked_samples():
    env = np.ones(1000)
    env[:600] = 50.0
    masked = np.zeros(1000, dtype=bool)
    masked[:600] = True
    assert rc.rest_level(env) == 50.0
    assert rc.rest_level(env, masked) == 1.0


EMG_RATE = 990.0


def _emg(seconds: float, seed: int = 1) -> np.ndarray:
    """Rest noise with a 2 s burst ten times stronger from 5 s."""
    x = _noise(round(seconds * EMG_RATE), seed)
    x[round(5 * EMG_RATE) : round(7 * EMG_RATE)] *= 10
    return x


def _hum(n: int, hz: float, amplitude: float) -> np.ndarray:
    t = np.arange(n) / EMG_RATE
    return amplitude * (np.sin(2 * np.pi * hz * t) + 0.3 * np.sin(2 * np.pi * 3 * hz * t))


@pytest.mark.parametrize("hz", [50.0, 49.5])
def test_hum_finds_the_line_and_its_share(hz):
    x = _emg(30)
    clean = rc.hum(x, EMG_RATE)
    # noise alone still has a largest bin near 50 Hz; only its excess over the floor counts
    assert clean.fraction < 0.03
    humming = rc.hum(x + _hum(x.size, hz, 6.0), EMG_RATE)
    assert humming.hz == pytest.approx(hz, abs=0.1)
    assert humming.fraction >= rc.HUM_LIMIT


def test_reference_envelope_is_not_fooled_by_hum_or_stuck_samples():
    x = _emg(30)
    plain = rc.reference(x, EMG_RATE)
    dirty = x + _hum(x.size, 50.0, 6.0)
    dirty[round(12 * EMG_RATE) : round(13 * EMG_RATE)] = 40.0  # a dropout holding a high value
    ref = rc.reference(dirty, EMG_RATE)
    assert ref.stuck.sum() == round(EMG_RATE)
    assert ref.rest_level == pytest.approx(plain.rest_level, rel=0.25)
    # the dropout and the hum are rest to the judge; the burst is not
    assert rc.lies_on_rest(ref.envelope, ref.rest_level, round(11 * EMG_RATE), round(14 * EMG_RATE))
    assert rc.lies_on_rest(ref.envelope, ref.rest_level, round(20 * EMG_RATE), round(25 * EMG_RATE))
    assert not rc.lies_on_rest(
        ref.envelope, ref.rest_level, round(5 * EMG_RATE), round(6 * EMG_RATE)
    )


def test_load_channels_pairs_each_raw_channel_with_its_activated_channel(tmp_path):
    from emg_core.synthetic import write_ghostly

    path = tmp_path / "session.c3d"
    truth = write_ghostly(path, seed=5, duration_s=20.0)
    data = rc.load_channels(path, ["CH2 Raw", "CH1 Raw", "CH1 activated"])
    for name in ("CH1 Raw", "CH2 Raw"):
        d = data[name]
        assert d.rate == truth.rate and d.raw.size == truth.n_samples
        # with no merging and no minimum, the game's count is its raw active stretches
        count = rc.game_count(d.activated, d.rate, merge_gap_s=0, min_duration_s=0)
        assert count == len(truth.activated[name]) > 0
    assert not np.array_equal(data["CH1 Raw"].activated, data["CH2 Raw"].activated)
    assert data["CH1 activated"].activated is None  # only a raw channel has a game count


def _channel(contractions=(), mvc=(None, None), **kw):
    base = dict(
        name="CH1 Raw",
        contractions_total=len(contractions),
        contractions_good=0,
        usable=True,
        warnings=(),
        mains_removed=False,
        mvc_method="session_estimate",
        mvc_start_ms=mvc[0],
        mvc_end_ms=mvc[1],
        contractions=tuple(
            SimpleNamespace(index=i, start_ms=s, end_ms=e) for i, (s, e) in enumerate(contractions)
        ),
    )
    base.update(kw)
    return SimpleNamespace(**base)


def test_judge_flags_contractions_and_mvc_window_on_dropout_and_on_rest():
    x = _emg(30)
    x[round(20 * EMG_RATE) : round(20.5 * EMG_RATE)] = 0.0  # a dropout in the rest
    ch = _channel(
        contractions=[(5000, 7000), (19_000, 21_000), (24_000, 24_800)],
        mvc=(20_100, 20_600),
    )
    v = rc.judge(ch, x, None, EMG_RATE)
    assert v.on_dropout == (1,)
    assert v.mvc_on_dropout
    assert v.on_rest == (1, 2)
    assert v.spanning_rest == (1,)  # ~1.5 s of rest before the dropout inside (19, 21) s
    assert v.game is None and v.within_tolerance is None
    assert not v.mvc_window_missing


def test_judge_counts_the_game_and_asks_for_the_mvc_window():
    x = _emg(30)
    act = np.zeros(x.size)
    act[round(5 * EMG_RATE) : round(7 * EMG_RATE)] = 1e-5
    v = rc.judge(_channel(contractions=[(5000, 7000)]), x, act, EMG_RATE)
    assert (v.game, v.within_tolerance, v.on_rest, v.spanning_rest) == (1, True, (), ())
    assert v.mvc_window_missing
    given = rc.judge(_channel(mvc_method="given"), x, act, EMG_RATE)
    assert not given.mvc_window_missing


def test_a_hum_channel_is_handled_when_cleaned_or_flagged_unusable():
    assert rc.hum_handled(0.1, _channel())
    assert not rc.hum_handled(0.3, _channel())
    assert rc.hum_handled(0.3, _channel(mains_removed=True))
    assert rc.hum_handled(0.3, _channel(usable=False, warnings=("mains hum",)))
    assert not rc.hum_handled(0.3, _channel(usable=False))  # unusable without saying why


def test_a_dropout_inside_an_active_contraction_is_bridged_one_at_its_edge_is_not():
    rate = 1000.0
    env = np.ones(6000)
    env[1000:3000] = 50.0  # a burst ...
    stuck_s, stuck_e = np.array([1800]), np.array([2100])  # ... the sensor lost in its middle
    assert rc.held_inside(env, 1.0, rate, 1000, 3000, stuck_s, stuck_e)
    # the contraction starts at the dropout: the dropout made its edge
    assert not rc.held_inside(env, 1.0, rate, 1750, 3000, stuck_s, stuck_e)
    # rest on one side: a dropout followed by a burst is not one burst held through it
    env[1000:2100] = 1.0
    assert not rc.held_inside(env, 1.0, rate, 1000, 3000, stuck_s, stuck_e)
    # no stuck run in the contraction: nothing is held inside it
    assert not rc.held_inside(env, 1.0, rate, 4000, 5000, stuck_s, stuck_e)
