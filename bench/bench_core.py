"""Time the full analysis of a 10-minute 2-channel 2 kHz GHOSTLY-layout recording.

Prints one JSON object (timings in seconds, memory in bytes) and a one-line summary. The same
run times a reference on the same samples, the least any EMG analysis does (read the file,
zero-phase 20-450 Hz band-pass and a 50 ms RMS envelope of each channel), so figures taken on
machines of different speed, or on one machine under different load, can be compared.
The recording is synthetic (``emg_core.synthetic``) with known bursts, so the same run also
reports detection accuracy. Usage: ``.venv/bin/python bench/bench_core.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from emg_core import analyze
from emg_core.c3d import read_c3d
from emg_core.filters import bandpass, design_bandpass, rms_envelope
from emg_core.synthetic import ghostly_recording

TARGET_S = 0.15
TARGET_MEMORY_RATIO = 3.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    args = parser.parse_args()

    t0 = time.perf_counter()
    content, truth = ghostly_recording(
        seed=2024, duration_s=args.duration, rate=args.rate, contractions=10_000
    )
    generate_s = time.perf_counter() - t0
    signal_bytes = len(truth.channels) * truth.n_samples * 8  # the EMG channels as float64

    analyze(content)  # warm-up: imports, FFT plans
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = analyze(content)
        times.append(time.perf_counter() - start)

    def reference() -> None:
        rec = read_c3d(content)
        filt = design_bandpass(rec.rate)
        for index in range(len(truth.channels)):
            rms_envelope(bandpass(rec.channel(index), filt), rec.rate)

    reference()
    ref_times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        reference()
        ref_times.append(time.perf_counter() - start)

    tracemalloc.start()
    analyze(content)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    onset, offset, missed, false = [], [], 0, 0
    for ch in result.channels:
        bursts = truth.bursts_for(ch.name)
        found = list(ch.contractions)
        for b in bursts:
            hits = [c for c in found if c.start_ms / 1000 < b.end_s and c.end_ms / 1000 > b.start_s]
            if not hits:
                missed += 1
                continue
            false += len(hits) - 1
            onset.append(abs(hits[0].start_ms / 1000 - b.start_s) * 1000)
            offset.append(abs(hits[-1].end_ms / 1000 - b.end_s) * 1000)
        false += sum(
            1
            for c in found
            if not any(c.start_ms / 1000 < b.end_s and c.end_ms / 1000 > b.start_s for b in bursts)
        )

    report = {
        "recording": {
            "duration_s": truth.duration_s,
            "rate_hz": truth.rate,
            "emg_channels": len(truth.channels),
            "file_bytes": len(content),
            "signal_float64_bytes": signal_bytes,
            "bursts": len(truth.bursts),
        },
        "generate_s": generate_s,
        "analyze_s": {"min": min(times), "median": statistics.median(times), "max": max(times)},
        "reference_s": {
            "what": "read + band-pass + RMS envelope of every channel, same samples, same run",
            "median": statistics.median(ref_times),
        },
        "ratio_to_reference": statistics.median(times) / statistics.median(ref_times),
        "peak_traced_bytes": peak,
        "peak_memory_ratio": peak / signal_bytes,
        "accuracy": {
            "missed": missed,
            "false": false,
            "mean_abs_onset_ms": statistics.fmean(onset) if onset else None,
            "mean_abs_offset_ms": statistics.fmean(offset) if offset else None,
        },
        "targets": {"analyze_s": TARGET_S, "peak_memory_ratio": TARGET_MEMORY_RATIO},
    }
    print(json.dumps(report, indent=2))
    ok = statistics.median(times) <= TARGET_S and peak / signal_bytes <= TARGET_MEMORY_RATIO
    print(
        f"{'PASS' if ok else 'MISS'}: {truth.duration_s / 60:.0f} min x {len(truth.channels)} ch "
        f"@ {truth.rate:.0f} Hz analysed in {statistics.median(times) * 1000:.0f} ms median "
        f"(target {TARGET_S * 1000:.0f} ms; {report['ratio_to_reference']:.2f}x the "
        f"{statistics.median(ref_times) * 1000:.0f} ms reference of the same run), "
        f"peak memory {peak / signal_bytes:.2f}x the signal "
        f"(target {TARGET_MEMORY_RATIO:.0f}x), {missed} missed / {false} false of "
        f"{len(truth.bursts)} bursts, onset {report['accuracy']['mean_abs_onset_ms']:.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
