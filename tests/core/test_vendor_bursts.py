"""Bursts on other labs' recordings, as a plot of each channel shows them."""

from __future__ import annotations

import pytest

from emg_core import analyze

from .helpers import vendor_file


def test_qualisys_every_channel_gives_the_bursts_its_plot_shows():
    # 1.7 s of treadmill walking: each of the 16 EMG channels shows one to three bursts with
    # rest between them, and rest takes up too little of the file for a quiet second to exist
    result = analyze(vendor_file("Qualisys.c3d"))
    assert len(result.channels) == 16
    for ch in result.channels:
        assert ch.usable, (ch.name, ch.warnings)
        assert 1 <= ch.contractions_total <= 3, (ch.name, ch.contractions_total)
        # bursts, not the whole file called one contraction
        longest = max(c.duration_ms for c in ch.contractions)
        assert longest < 0.75 * result.duration_s * 1000, (ch.name, longest)


@pytest.mark.parametrize("name", ["Right Gastrocnemius medialis", "Left Gastrocnemius medialis"])
def test_bts_gait_bursts_separated_by_rest_come_out_separately(name):
    # walking: one calf burst per stride (~1.1 s), each under a second long; the envelope
    # returns to rest between them
    result = analyze(vendor_file("BTS.c3d"))
    ch = next(c for c in result.channels if c.name.startswith(name))
    assert ch.contractions_total >= 5, [(c.start_ms, c.end_ms) for c in ch.contractions]
    assert max(c.duration_ms for c in ch.contractions) < 1500
