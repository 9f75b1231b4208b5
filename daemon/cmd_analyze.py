"""``emgd analyze FILE.c3d [--json] [--plot OUT.png]``: analyse one recording and print it.

No database and no daemon: the same ``emg_core.analyze`` the worker runs, for a clinician's or
developer's terminal. A bad file exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

#: exit code of a file that cannot be analysed (as argparse uses for bad usage)
EXIT_BAD_FILE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a C3D recording")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument(
        "--plot", metavar="OUT.png", help="draw each channel's envelope and contractions"
    )
    parser.add_argument(
        "--mvc",
        action="append",
        default=[],
        metavar="LABEL=VALUE",
        help="given MVC for a channel, in the channel's unit (repeatable); others are estimated",
    )
    parser.add_argument("--mvc-percentage", type=float, help="intensity threshold, %% of MVC")
    parser.add_argument("--duration-threshold-ms", type=float, help="minimum good duration")
    parser.add_argument("--expected", type=int, help="expected contractions per channel")
    parser.add_argument("--include", help="regular expression selecting EMG channel labels")


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The analysis options the command line asks for, as ``AnalysisOptions.from_dict`` input."""
    options: dict[str, Any] = {}
    mvc = {}
    for item in args.mvc:
        label, sep, value = item.rpartition("=")
        try:
            if not sep or not label:
                raise ValueError
            mvc[label] = float(value)
        except ValueError:
            raise ValueError(f"--mvc expects LABEL=VALUE, got {item!r}") from None
    if mvc:
        options["mvc"] = mvc
    for name, key in (
        ("mvc_percentage", "mvc_percentage"),
        ("duration_threshold_ms", "duration_threshold_ms"),
        ("expected", "expected_contractions"),
        ("include", "include"),
    ):
        if getattr(args, name, None) is not None:
            options[key] = getattr(args, name)
    return options


def _fmt(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def render(result) -> str:
    """A readable table of a ``SessionResult``."""
    meta = result.metadata
    lines = [
        f"file: {result.file}   duration: {result.duration_s:.1f} s   "
        f"recorded: {result.recorded_at.isoformat() if result.recorded_at else '-'}",
        f"analysis {result.analysis_version}   overall compliance: "
        f"{result.overall_compliance:.0%}   symmetry: "
        f"{'-' if result.symmetry is None else f'{result.symmetry:.2f}'}",
    ]
    if meta.game_name or meta.player_name:
        lines.append(
            f"game: {meta.game_name or '-'} level {_fmt(meta.game_level, '')}   player: "
            f"{meta.player_name or '-'}   score: {_fmt(meta.game_score, 'g')}"
        )
    header = (
        f"{'channel':<24} {'n':>3} {'good':>4} {'MVC ok':>6} {'dur ok':>6} {'compl':>6} "
        f"{'MVC':>10} {'RMS':>10} {'MPF Hz':>7} {'MDF Hz':>7} {'MDF %/s':>8} {'quality':>7}"
    )
    lines += ["", header, "-" * len(header)]
    for ch in result.channels:
        lines.append(
            f"{ch.name[:24]:<24} {ch.contractions_total:>3} {ch.contractions_good:>4} "
            f"{ch.contractions_mvc_compliant:>6} {ch.contractions_duration_compliant:>6} "
            f"{ch.compliance_rate:>6.0%} {ch.mvc_value:>10.3g} {ch.rms:>10.3g} "
            f"{_fmt(ch.mpf_hz, '.0f'):>7} {_fmt(ch.mdf_hz, '.0f'):>7} "
            f"{_fmt(ch.mdf_slope_pct_per_s, '+.2f'):>8} {ch.signal_quality:>7.2f}"
        )
    return "\n".join(lines)


def plot(result, envelopes: dict, out: str) -> None:
    """Each channel's envelope with its contractions and MVC threshold, one panel per channel."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    import numpy as np

    channels = list(result.channels)
    fig, axes = plt.subplots(
        len(channels), 1, figsize=(12, 2.2 * len(channels)), sharex=True, squeeze=False
    )
    for ax, ch in zip(axes[:, 0], channels, strict=True):
        rate, env = envelopes[ch.name]
        t = np.arange(env.size) / rate
        ax.plot(t, env, lw=0.6, color="0.2")
        for c in ch.contractions:
            colour = "tab:green" if c.is_good else "tab:orange"
            ax.axvspan(c.start_ms / 1000, c.end_ms / 1000, color=colour, alpha=0.25)
        ax.axhline(ch.mvc_threshold, color="tab:red", ls="--", lw=0.8, label="MVC threshold")
        ax.set_ylabel(f"{ch.name}\n[{ch.unit}]", fontsize=8)
    axes[-1, 0].set_xlabel("time (s)")
    axes[0, 0].legend(loc="upper right", fontsize=8)
    fig.suptitle(result.file)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    import emg_core

    def fail(message: str) -> int:
        print(f"emgd analyze: {args.file}: {message}", file=sys.stderr)
        return EXIT_BAD_FILE

    try:
        options = emg_core.AnalysisOptions.from_dict(options_from_args(args))
        result = emg_core.analyze(args.file, options=options)
    except ValueError as exc:  # InvalidOptionsError is one, and so is a bad --mvc
        return fail(str(exc))
    except emg_core.EmgError as exc:
        return fail(exc.reason)
    except MemoryError:
        return fail("the file is too large to analyse in the memory available")

    try:
        if args.json:
            json.dump(result.to_dict(), sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            print(render(result))
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader (e.g. `| head`) left: not an error; keep Python from reporting it at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return fail("--plot needs matplotlib: pip install 'emgd[plot]'")
        from emg_core.analysis import channel_envelopes

        try:
            plot(result, channel_envelopes(args.file, options=options), args.plot)
        except OSError as exc:
            return fail(f"cannot write the plot to {args.plot}: {exc.strerror or exc}")
    return 0
