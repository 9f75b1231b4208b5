"""``emgd analyze FILE.c3d [--json] [--plot OUT.png]``: analyse one recording and print it.

No database and no daemon: the same ``emg_core.analyze`` the worker runs, for a clinician's or
developer's terminal. A bad file exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy, matplotlib and emg_core load inside main(): `emgd --help` stays fast
    import numpy as np
    from matplotlib.axes import Axes

    from emg_core.analysis import ChannelTrace
    from emg_core.results import ChannelResult, SessionResult

#: exit code of a file that cannot be analysed (as argparse uses for bad usage)
EXIT_BAD_FILE = 2


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="a C3D recording")
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument(
        "--plot",
        metavar="OUT.png",
        help="draw each channel's raw signal, envelope, levels, artefact and contractions",
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
    parser.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="LABEL:FIELD=VALUE",
        help="one channel's target, as a therapist sets it (repeatable): FIELD is mvc_value, "
        "mvc_unit (V, mV, uV), mvc_percentage, duration_threshold_ms or expected_contractions; "
        "LABEL '*' means every channel",
    )
    parser.add_argument(
        "--options",
        metavar="FILE.json",
        help="analysis options from a JSON file: an options object, a session's processing "
        "record, or a whole result (reproduces what the daemon did); the flags above override it",
    )


_CHANNEL_FIELDS = {
    "mvc_value": float,
    "mvc_unit": str,
    "mvc_percentage": float,
    "duration_threshold_ms": float,
    "expected_contractions": int,
}


def options_from_file(path: str) -> dict[str, Any]:
    """Options from JSON: an options object, a ``processing`` record (its ``options``), or a
    result or session row (its ``processing.options``)."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except OSError as exc:
        raise ValueError(f"--options: cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"--options: {path} is not JSON ({exc.msg}, line {exc.lineno})") from None
    if isinstance(data, dict) and isinstance(data.get("processing"), dict):
        data = data["processing"]
    if isinstance(data, dict) and isinstance(data.get("options"), dict):
        data = data["options"]
    if not isinstance(data, dict):
        raise ValueError(f"--options: {path} holds no options object")
    return data


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The analysis options the command line asks for, as ``AnalysisOptions.from_dict`` input."""
    options: dict[str, Any] = {}
    if getattr(args, "options", None):
        options = options_from_file(args.options)
    channels: dict[str, dict[str, Any]] = {
        k: dict(v) for k, v in (options.get("channels") or {}).items()
    }
    for item in getattr(args, "channel", None) or []:
        label, colon, rest = item.partition(":")
        field, eq, value = rest.partition("=")
        if not (colon and eq and label and field in _CHANNEL_FIELDS):
            raise ValueError(
                f"--channel expects LABEL:FIELD=VALUE with FIELD one of "
                f"{', '.join(_CHANNEL_FIELDS)}, got {item!r}"
            )
        try:
            channels.setdefault(label, {})[field] = _CHANNEL_FIELDS[field](value)
        except ValueError:
            raise ValueError(f"--channel {item!r}: {value!r} is not a valid {field}") from None
    if channels:
        options["channels"] = channels
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
        options["mvc"] = {**(options.get("mvc") or {}), **mvc}
        # a hand-given MVC is "given", whatever the file said of the channel before
        methods = dict(options.get("mvc_methods") or {})
        for label in mvc:
            methods.pop(label, None)
        if methods or "mvc_methods" in options:
            options["mvc_methods"] = methods
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


# Surface EMG amplitudes are tens to hundreds of microvolts: in volts they print as 4.5e-04, which
# nobody reads at a glance. Units that are not a voltage are shown as the file gives them.
_TO_MICROVOLT = {
    "V": 1e6,
    "v": 1e6,
    "mV": 1e3,
    "mv": 1e3,
    "uV": 1.0,
    "\u00b5V": 1.0,
    "\u03bcV": 1.0,
}


def display_unit(unit: str) -> tuple[str, float]:
    """The unit amplitudes are shown in and the factor from ``unit`` to it (µV for voltages)."""
    scale = _TO_MICROVOLT.get(unit.strip())
    return ("\u00b5V", scale) if scale is not None else (unit, 1.0)


def amplitude_text(value: float | None, scale: float) -> str:
    """``value`` times ``scale`` for a table: '-' for None."""
    if value is None:
        return "-"
    value *= scale
    # whole microvolts above 100 (1585, not 1.59e+03); three significant digits below
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _mvc_percentage(result: SessionResult) -> float | None:
    """The intensity threshold in % of MVC the result was analysed with."""
    options = (result.processing or {}).get("options") or {}
    if isinstance(options.get("mvc_percentage"), int | float):
        return float(options["mvc_percentage"])
    for ch in result.channels:
        if ch.mvc_value and ch.mvc_threshold is not None:
            return 100.0 * ch.mvc_threshold / ch.mvc_value
    return None


def _estimated(ch: ChannelResult) -> bool:
    return ch.mvc_method == "session_estimate"


def _mvc_line(ch: ChannelResult, unit: str, scale: float) -> str:
    if ch.mvc_value is None:
        return "MVC: - (no usable effort to measure it on)"
    if ch.mvc_source:
        source = ch.mvc_source
    elif _estimated(ch):
        source = "estimated from this session"
        if ch.mvc_start_ms is not None and ch.mvc_end_ms is not None:
            source += f" ({ch.mvc_start_ms / 1000:.2f}-{ch.mvc_end_ms / 1000:.2f} s)"
    else:
        source = "given"
    mark = "*" if _estimated(ch) else ""
    return (
        f"MVC {amplitude_text(ch.mvc_value, scale)} {unit}, {source}{mark}; "
        f"threshold {amplitude_text(ch.mvc_threshold, scale)} {unit}"
    )


def _signal_line(ch: ChannelResult, unit: str, scale: float) -> str:
    rest, onset, offset = (
        amplitude_text(v, scale) for v in (ch.rest_level, ch.onset_level, ch.offset_level)
    )
    parts = [
        f"rest {rest} / onset {onset} / offset {offset} {unit}",
        f"masked {ch.masked_s:.1f} s of artefact"
        if ch.masked_s >= 0.05
        else f"masked {ch.masked_samples} samples of artefact"
        if ch.masked_samples
        else "nothing masked",
    ]
    if ch.mains_hz is None:
        parts.append("no mains hum")
    else:
        parts.append(
            f"hum {ch.mains_hz:.1f} Hz {'removed' if ch.mains_removed else 'left in'}"
            f" ({ch.mains_fraction:.0%} of in-band power)"
        )
    return "; ".join(parts)


def render(result: SessionResult) -> str:
    """A readable table of a ``SessionResult``, each channel's notes and warnings under it.

    Amplitudes are in µV when the channel is in V or mV; a channel without counts (unusable)
    shows '-' and why.
    """
    meta = result.metadata
    lines = [
        f"file: {result.file}   duration: {result.duration_s:.1f} s   "
        f"recorded: {result.recorded_at.isoformat() if result.recorded_at else '-'}",
        f"analysis {result.analysis_version}   overall compliance: "
        f"{_fmt(result.overall_compliance, '.0%')}   symmetry: {_fmt(result.symmetry, '.2f')}",
    ]
    if meta.game_name or meta.player_name:
        lines.append(
            f"game: {meta.game_name or '-'} level {_fmt(meta.game_level, '')}   player: "
            f"{meta.player_name or '-'}   score: {_fmt(meta.game_score, 'g')}"
        )
    header = (
        f"{'channel':<24} {'n':>3} {'good':>4} {'MVC ok':>6} {'dur ok':>6} {'compl':>6} "
        f"{'unit':>4} {'MVC':>7} {'rest':>6} {'onset':>6} {'RMS':>7} "
        f"{'MPF Hz':>7} {'MDF Hz':>7} {'MDF %/s':>8} {'quality':>7}"
    )
    lines += ["", header, "-" * len(header)]
    notes: list[str] = []
    for ch in result.channels:
        unit, scale = display_unit(ch.unit)
        mvc, rest, onset, rms = (
            amplitude_text(v, scale) for v in (ch.mvc_value, ch.rest_level, ch.onset_level, ch.rms)
        )
        row = (
            f"{ch.name[:24]:<24} {_fmt(ch.contractions_total, 'd'):>3} "
            f"{_fmt(ch.contractions_good, 'd'):>4} {_fmt(ch.contractions_mvc_compliant, 'd'):>6} "
            f"{_fmt(ch.contractions_duration_compliant, 'd'):>6} "
            f"{_fmt(ch.compliance_rate, '.0%'):>6} {unit[:4]:>4} {mvc:>7} {rest:>6} {onset:>6} "
            f"{rms:>7} {_fmt(ch.mpf_hz, '.0f'):>7} {_fmt(ch.mdf_hz, '.0f'):>7} "
            f"{_fmt(ch.mdf_slope_pct_per_s, '+.2f'):>8} {_fmt(ch.signal_quality, '.2f'):>7}"
        )
        lines.append(row + ("   unusable (see its warnings)" if not ch.usable else ""))
        notes.append(f"{ch.name}:")
        if ch.contractions_total is None:
            why = "the signal cannot be trusted" if not ch.usable else "the analysis gave none"
            notes.append(f"    no counts: {why}")
        elif not ch.usable:
            notes.append("    unusable: its counts are not to be trusted")
        notes.append(f"    {_mvc_line(ch, unit, scale)}")
        notes.append(f"    {_signal_line(ch, unit, scale)}")
        if ch.fatigue_reason:
            notes.append(f"    fatigue: {ch.fatigue_reason}")
        notes += [f"    ! {warning}" for warning in ch.warnings]
    lines += ["", *notes]
    if any(_estimated(ch) and ch.mvc_value is not None for ch in result.channels):
        pct = _mvc_percentage(result)
        share = "the MVC threshold" if pct is None else f"\u2265{pct:g} % MVC"
        of = "a share" if pct is None else f"{pct:g} %"
        lines += [
            "",
            f"* MVC estimated from this session: {share} means {of} of this session's strongest "
            "effort, not of a maximal test contraction.",
        ]
    return "\n".join(lines)


def _binned(
    rate: float, raw: np.ndarray, envelope: np.ndarray, masked: np.ndarray, max_bins: int = 6000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Time, raw min/max, envelope max and mask-any per bin: a long recording drawn with every
    sample would be slow and too dense to see, and a spike must not vanish between two samples."""
    import numpy as np

    n = raw.size
    step = max(1, -(-n // max_bins))
    m = n // step * step
    if step == 1 or m == 0:
        t = np.arange(n) / rate
        return t, raw, raw, envelope, np.asarray(masked, dtype=bool)
    centres = (np.arange(m // step) * step + step / 2) / rate
    r = raw[:m].reshape(-1, step)
    return (
        centres,
        r.min(axis=1),
        r.max(axis=1),
        envelope[:m].reshape(-1, step).max(axis=1),
        np.asarray(np.asarray(masked[:m], dtype=bool).reshape(-1, step).any(axis=1)),
    )


def _fit_to_signal(
    ax_raw: Axes,
    ax_env: Axes,
    raw: np.ndarray,
    env: np.ndarray,
    masked: np.ndarray,
    ch: ChannelResult,
    scale: float,
) -> None:
    """Scale both panels to the samples that were analysed: a railed or dropped-out stretch (grey)
    would otherwise set the range and squash the signal into a line."""
    import numpy as np

    keep = ~np.asarray(masked, dtype=bool)
    if keep.any() and not keep.all():
        lo, hi = float(raw[keep].min()), float(raw[keep].max())
        pad = 0.05 * (hi - lo) or 1.0
        ax_raw.set_ylim(lo - pad, hi + pad)
    positive = env[keep & (env > 0)]
    if ax_env.get_yscale() == "log" and positive.size:
        levels = [
            v * scale
            for v in (ch.rest_level, ch.offset_level, ch.onset_level, ch.mvc_threshold)
            if v is not None and v > 0
        ]
        bottom = min([float(np.percentile(positive, 0.1)), *levels])
        top = max([float(positive.max()), *levels])
        ax_env.set_ylim(bottom / 1.5, top * 1.5)


def plot(result: SessionResult, traces: dict[str, ChannelTrace], out: str) -> None:
    """Per channel, two panels sharing time: the raw signal, and the envelope (log scale) with the
    rest, onset and offset levels and the MVC threshold; artefact grey, contractions shaded."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    channels = [ch for ch in result.channels if ch.name in traces]
    n = max(len(channels), 1)
    fig, axes = plt.subplots(
        2 * n,
        1,
        figsize=(13, 3.6 * n),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [1, 1.4] * n},
    )
    levels = [
        ("rest_level", "rest", "0.45", ":"),
        ("offset_level", "offset", "tab:blue", ":"),
        ("onset_level", "onset", "tab:blue", "--"),
        ("mvc_threshold", "MVC threshold", "tab:red", "--"),
    ]
    for k, ch in enumerate(channels):
        ax_raw, ax_env = axes[2 * k, 0], axes[2 * k + 1, 0]
        trace = traces[ch.name]
        unit, scale = display_unit(ch.unit)
        raw = np.asarray(trace.raw, dtype=float) * scale
        env = np.asarray(trace.envelope, dtype=float) * scale
        t, lo, hi, env_max, masked = _binned(trace.rate, raw, env, trace.masked)
        if lo is hi:  # short enough to draw every sample
            ax_raw.plot(t, raw, lw=0.3, color="0.25")
        else:
            ax_raw.fill_between(t, lo, hi, lw=0.3, color="0.25")
        ax_env.plot(t, np.where(env_max > 0, env_max, np.nan), lw=0.7, color="0.15")
        if np.any(env_max > 0):
            ax_env.set_yscale("log")
        _fit_to_signal(ax_raw, ax_env, raw, env, trace.masked, ch, scale)
        for ax in (ax_raw, ax_env):
            # one artist for every masked run, however many there are
            ax.fill_between(
                t, 0, 1, where=masked, step="mid", color="0.6", alpha=0.45, lw=0,
                transform=ax.get_xaxis_transform(),
            )  # fmt: skip
            for c in ch.contractions:
                colour = "tab:green" if c.is_good else "tab:orange"
                ax.axvspan(c.start_ms / 1000, c.end_ms / 1000, color=colour, alpha=0.2, lw=0)
        for field, _label, colour, style in levels:
            value = getattr(ch, field)
            if value is not None and value > 0:
                ax_env.axhline(value * scale, color=colour, ls=style, lw=0.9)
        state = "" if ch.usable else "  UNUSABLE: " + "; ".join(ch.warnings)
        ax_raw.set_title(f"{ch.name}{state}", fontsize=9, loc="left")
        ax_raw.set_ylabel(f"raw [{unit}]", fontsize=8)
        ax_env.set_ylabel(f"envelope [{unit}]", fontsize=8)
    handles = [
        Patch(color="tab:green", alpha=0.3, label="good contraction"),
        Patch(color="tab:orange", alpha=0.3, label="other contraction"),
        Patch(color="0.6", alpha=0.45, label="masked artefact"),
    ] + [Line2D([], [], color=c, ls=s, label=label) for _f, label, c, s in levels]
    # above the panels, where it hides no data
    fig.legend(handles=handles, loc="upper right", fontsize=7, ncols=len(handles), frameon=False)
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(result.file, x=0.01, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
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
        from emg_core.analysis import channel_traces

        try:
            plot(result, channel_traces(args.file, options=options), args.plot)
        except OSError as exc:
            return fail(f"cannot write the plot to {args.plot}: {exc.strerror or exc}")
    return 0
