"""emgd against NeuroKit2 and BioSPPy on one 10-minute 2-channel 2 kHz synthetic recording.

Times, with the same method for all (one warm-up call, then the median of ``--repeat`` calls):

- ``emgd_full``: ``emg_core.analyze`` on the C3D bytes: parse, channel discovery, band-pass,
  RMS envelope, detection, MVC, per-contraction and windowed spectra, fatigue slopes, quality,
  activation agreement. Far more than the others compute; this is the product's number.
- ``emgd_detect``: the like-for-like part, from the same float64 arrays the others get:
  band-pass, RMS envelope and contraction detection (onsets and offsets) per channel.
- ``neurokit2``: ``nk.emg_process`` per channel at the recording's rate (clean = 100 Hz
  high-pass, linear-envelope amplitude, threshold activation: onsets, offsets, activity).
- ``biosppy``: ``biosppy.signals.emg.emg(show=False)`` per channel (100 Hz high-pass and onsets
  only: no offsets, no amplitude measures).

and scores every tool's onsets against the generator's ground truth (bench/common.py:
``score_onsets``). NeuroKit2 and BioSPPy live only in the benchmark's own virtualenv (see
bench/README.md); without them this prints a skip report and exits 0.

Usage: ``bench/.venv-compare/bin/python bench/bench_compare.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit, machine, merge_scores, peak_traced, score_onsets, time_repeats

TARGET_FULL_S = 0.15
TARGET_VS_NEUROKIT2 = 200.0
TARGET_VS_BIOSPPY = 10.0
TARGET_MEMORY_RATIO = 3.0
VENV_COMMAND = (
    "python3 -m venv bench/.venv-compare && "
    "bench/.venv-compare/bin/pip install -e . neurokit2 biosppy peakutils"
)


def _skip(reason: str) -> int:
    emit(
        {"skipped": True, "reason": reason, "setup": VENV_COMMAND},
        f"SKIP: {reason}; set up with: {VENV_COMMAND}",
    )
    return 0


def _runs(mask) -> tuple:
    import numpy as np

    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _bio_pairs(idx, filtered, rate: float) -> tuple:
    """Split BioSPPy's crossings into onsets and offsets with its own smoother and threshold
    (``biosppy.signals.emg.find_onsets`` defaults, recomputed outside the timed calls)."""
    import numpy as np
    from biosppy.signals import tools as st

    smooth, _ = st.smoother(
        signal=np.abs(filtered), kernel="boxzen", size=int(rate * 0.05), mirror=True
    )
    aux = np.abs(smooth)
    threshold = 1.2 * np.mean(aux) + 2.0 * np.std(aux, ddof=1)
    n = smooth.size
    nxt = np.minimum(idx + 1, n - 1)
    rising = idx[(smooth[idx] <= threshold) & (smooth[nxt] > threshold) & (idx + 1 < n)]
    prev = np.maximum(idx - 1, 0)
    falling = idx[(smooth[idx] <= threshold) & (smooth[prev] > threshold) & (idx > 0)]
    onsets, offsets = [], []
    for r in rising:
        k = np.searchsorted(falling, r, side="right")
        onsets.append(r / rate)
        offsets.append((falling[k] if k < falling.size else n - 1) / rate)
    return onsets, offsets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per tool (default 5)")
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--rate", type=float, default=2000.0)
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument(
        "--memory",
        choices=("emgd", "all"),
        default="all",
        help="whose peak memory to trace (NeuroKit2 takes a minute per traced run)",
    )
    args = parser.parse_args()

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import neurokit2 as nk
            from biosppy.signals import emg as bio_emg
    except Exception as exc:  # ImportError, or a broken install raising something else
        return _skip(f"NeuroKit2/BioSPPy not importable here ({type(exc).__name__}: {exc})")

    import numpy as np

    from emg_core import AnalysisOptions, analyze
    from emg_core.c3d import read_c3d
    from emg_core.detect import detect_contractions
    from emg_core.filters import bandpass, design_bandpass, rms_envelope
    from emg_core.synthetic import ghostly_recording

    t0 = time.perf_counter()
    content, truth = ghostly_recording(
        seed=args.seed, duration_s=args.duration, rate=args.rate, contractions=10_000
    )
    generate_s = time.perf_counter() - t0
    rate = truth.rate
    rec = read_c3d(content)
    # the others cannot read C3D: they get the decoded float64 channels, decoding not timed
    raws = {label: rec.channel(rec.labels.index(label)) for label in truth.channels}
    signal_bytes = sum(x.nbytes for x in raws.values())
    opts = AnalysisOptions()
    filt = design_bandpass(rate, opts.highpass_hz, opts.lowpass_hz, opts.filter_order)

    def emgd_full():
        return analyze(content)

    def emgd_detect():
        out = {}
        for label, raw in raws.items():
            env = rms_envelope(bandpass(raw, filt), rate, opts.envelope_window_ms / 1000)
            det = detect_contractions(env, rate, **opts.detection_kwargs())
            out[label] = (det.starts / rate, det.ends / rate)
        return out

    def neurokit2():
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, raw in raws.items():
                signals, _info = nk.emg_process(raw, sampling_rate=int(rate))
                starts, ends = _runs(signals["EMG_Activity"].to_numpy() > 0)
                out[label] = (starts / rate, ends / rate)
        return out

    def biosppy():
        out = {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, raw in raws.items():
                res = bio_emg.emg(signal=raw, sampling_rate=rate, show=False)
                out[label] = (np.asarray(res["onsets"]), res["filtered"])
        return out

    tools = {
        "emgd_full": emgd_full,
        "emgd_detect": emgd_detect,
        "biosppy": biosppy,
        "neurokit2": neurokit2,
    }
    timings, outputs = {}, {}
    for name, fn in tools.items():
        timings[name], outputs[name] = time_repeats(fn, args.repeat)
        print(f"# {name}: median {timings[name]['median']:.4f} s", file=sys.stderr, flush=True)

    memory = {}
    for name, fn in tools.items():
        if args.memory == "all" or name.startswith("emgd"):
            peak = peak_traced(fn)
            memory[name] = {"peak_traced_bytes": peak, "ratio_to_signal": peak / signal_bytes}

    full = outputs["emgd_full"]
    detected = {
        "emgd_full": {
            ch.name: (
                [c.start_ms / 1000 for c in ch.contractions],
                [c.end_ms / 1000 for c in ch.contractions],
            )
            for ch in full.channels
        },
        "emgd_detect": outputs["emgd_detect"],
        "neurokit2": outputs["neurokit2"],
        # BioSPPy's "onsets" are every crossing of its threshold, up and down, as documented
        "biosppy": {k: (idx / rate, None) for k, (idx, _) in outputs["biosppy"].items()},
        # ... so also score its up-crossings paired with the next down-crossing (the fair reading)
        "biosppy_paired": {
            k: _bio_pairs(idx, filtered, rate) for k, (idx, filtered) in outputs["biosppy"].items()
        },
    }
    accuracy = {
        name: merge_scores(
            [
                score_onsets(list(on), truth.bursts_for(label), None if off is None else list(off))
                for label, (on, off) in per_channel.items()
            ]
        )
        for name, per_channel in detected.items()
    }

    med = {k: v["median"] for k, v in timings.items()}
    ratios = {
        "neurokit2_over_emgd_full": med["neurokit2"] / med["emgd_full"],
        "biosppy_over_emgd_full": med["biosppy"] / med["emgd_full"],
        "neurokit2_over_emgd_detect": med["neurokit2"] / med["emgd_detect"],
        "biosppy_over_emgd_detect": med["biosppy"] / med["emgd_detect"],
    }
    mem_ratio = memory["emgd_full"]["ratio_to_signal"]
    checks = {
        "emgd_full_s": med["emgd_full"] <= TARGET_FULL_S,
        "vs_neurokit2": ratios["neurokit2_over_emgd_full"] >= TARGET_VS_NEUROKIT2,
        "vs_biosppy": ratios["biosppy_over_emgd_full"] >= TARGET_VS_BIOSPPY,
        "memory": mem_ratio <= TARGET_MEMORY_RATIO,
    }
    versions = {"neurokit2": nk.__version__}
    try:
        from importlib.metadata import version

        versions["biosppy"] = version("biosppy")
    except Exception:
        versions["biosppy"] = None
    report = {
        "benchmark": "compare",
        "machine": machine(),
        "versions": versions,
        "recording": {
            "duration_s": truth.duration_s,
            "rate_hz": rate,
            "emg_channels": len(truth.channels),
            "file_bytes": len(content),
            "signal_float64_bytes": signal_bytes,
            "bursts": len(truth.bursts),
            "seed": args.seed,
        },
        "generate_s": generate_s,
        "timing_method": f"1 warm-up call, then median of {args.repeat} (time.perf_counter)",
        "seconds": timings,
        "ratios": ratios,
        "peak_memory": memory,
        "accuracy": accuracy,
        "computes": {
            "emgd_full": "C3D parse + channel discovery, 20-450 Hz zero-phase band-pass, 50 ms "
            "RMS envelope, Hodges-Bui detection with hysteresis and refined onsets/offsets, MVC "
            "estimate, per-contraction amplitude and MPF/MDF, 1 s Welch fatigue series and "
            "slopes, signal quality, activated-channel agreement, session metrics",
            "emgd_detect": "band-pass + RMS envelope + detection (onsets and offsets), from "
            "float64 arrays",
            "neurokit2": "emg_process: 100 Hz high-pass clean, linear-envelope amplitude, "
            "threshold activation (onsets, offsets, activity); pandas DataFrame out; no MVC, "
            "spectra or fatigue",
            "biosppy": "emg: 100 Hz high-pass, 50 ms boxcar of the rectified signal against "
            "1.2 x mean + 2 SD of the whole recording; returns every crossing of that threshold "
            "as 'onsets' (scored as returned, and as up-crossings paired with the next "
            "down-crossing: biosppy_paired); no amplitude measures, MVC or spectra",
        },
        "scoring": "a burst is found when an onset lies in [start - 0.5 s, end); its earliest "
        "such onset is the match; every other onset is false",
        "targets": {
            "emgd_full_s": TARGET_FULL_S,
            "neurokit2_over_emgd_full": TARGET_VS_NEUROKIT2,
            "biosppy_over_emgd_full": TARGET_VS_BIOSPPY,
            "peak_memory_ratio": TARGET_MEMORY_RATIO,
        },
        "pass": checks,
    }

    def acc(name: str) -> str:
        a = accuracy[name]
        onset = a["mean_abs_onset_ms"]
        return (
            f"{name} {a['found']}/{a['bursts']} found {a['false']} false "
            f"onset {'-' if onset is None else f'{onset:.0f}'} ms"
        )

    summary = (
        f"{'PASS' if all(checks.values()) else 'MISS'}: emgd full analysis "
        f"{med['emgd_full'] * 1000:.0f} ms (target <= {TARGET_FULL_S * 1000:.0f}, spread "
        f"{timings['emgd_full']['spread_pct']:.0f}%), "
        f"{ratios['neurokit2_over_emgd_full']:.0f}x NeuroKit2 (target >= "
        f"{TARGET_VS_NEUROKIT2:.0f}x, {med['neurokit2']:.1f} s), "
        f"{ratios['biosppy_over_emgd_full']:.1f}x BioSPPy (target >= {TARGET_VS_BIOSPPY:.0f}x, "
        f"{med['biosppy'] * 1000:.0f} ms), memory {mem_ratio:.2f}x signal (target <= "
        f"{TARGET_MEMORY_RATIO:.0f}x); detection only {med['emgd_detect'] * 1000:.0f} ms = "
        f"{ratios['neurokit2_over_emgd_detect']:.0f}x NK / "
        f"{ratios['biosppy_over_emgd_detect']:.1f}x BioSPPy; "
        + "; ".join(acc(n) for n in ("emgd_full", "neurokit2", "biosppy", "biosppy_paired"))
    )
    emit(report, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
