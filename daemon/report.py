"""The report picture of one session: what a therapist looks at, drawn once by the daemon.

Per channel: the envelope the contractions were found on, the MVC threshold and the detection
levels, the masked artefact, and every contraction coloured by what it reached (good: intensity
and duration; MVC only; duration only; neither), with the channel's key numbers in its title.
The header carries the session's numbers. The app shows the PNG as it is: nothing to compute.

Rendering runs in the analysis workers (``render_png`` is called there through
``AnalysisPool.render_report``) with matplotlib's Agg backend and no pyplot state, under the
same memory limit and its own time bound. The picture has a fixed size per channel count
(``picture_size``), so it reads the same on every screen and a test can check it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes

# matplotlib is imported where a picture is drawn (in the analysis workers, which preload it),
# never by the daemon's own process: it only needs report_object_name.

WIDTH_PX = 1400
HEADER_PX = 90
CHANNEL_PX = 300
DPI = 100
#: at most this many points per drawn line (bins keep each bin's maximum: no peak is lost)
MAX_POINTS = 4000

#: contraction kind -> (colour, legend label)
KINDS = {
    "good": ("#2ca02c", "good (intensity and duration)"),
    "mvc_only": ("#1f77b4", "intensity only"),
    "duration_only": ("#ff7f0e", "duration only"),
    "neither": ("#d62728", "neither"),
}

_METHOD_WORDS = {
    "c3d_file": "from the recording",
    "patient_settings": "patient's settings",
    "reference_session": "reference session",
    "given": "given",
    "session_estimate": "relative: this session's best",
}
_TO_MICROVOLT = {"V": 1e6, "mV": 1e3, "uV": 1.0, "\u00b5V": 1.0, "\u03bcV": 1.0}

__all__ = [
    "KINDS",
    "contraction_kind",
    "draw",
    "picture_size",
    "render_png",
    "report_object_name",
]


def report_object_name(object_name: str, session_id: str) -> str:
    """Where a session's picture is stored: ``<patient folder>/reports/<session id>.png``, in the
    recording's bucket, so the recording's storage policies apply to it."""
    folder = object_name.split("/", 1)[0]
    return f"{folder}/reports/{session_id}.png"


def picture_size(n_channels: int) -> tuple[int, int]:
    """Width and height in pixels of the picture of a session with ``n_channels`` channels."""
    return WIDTH_PX, HEADER_PX + CHANNEL_PX * max(n_channels, 1)


def contraction_kind(c: dict[str, Any]) -> str:
    if c.get("meets_mvc") and c.get("meets_duration"):
        return "good"
    if c.get("meets_mvc"):
        return "mvc_only"
    if c.get("meets_duration"):
        return "duration_only"
    return "neither"


def render_png(data: bytes, name: str, options: dict[str, Any], result: dict[str, Any]) -> bytes:
    """The worker's entry point: the recording's traces, as the analysis saw them, drawn with the
    committed result's numbers."""
    from emg_core.analysis import AnalysisOptions, channel_traces

    opts = AnalysisOptions.from_dict(options) if options else AnalysisOptions()
    return draw(result, channel_traces(data, options=opts))


def draw(result: dict[str, Any], traces: dict[str, Any]) -> bytes:
    """The PNG of ``result`` (a ``SessionResult.to_dict()``) over ``traces`` (label ->
    ``ChannelTrace``)."""
    # Figure + the Agg canvas, no pyplot: no global figure state in a long-lived worker
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    channels = [ch for ch in result.get("channels") or [] if ch["name"] in traces]
    width, height = picture_size(len(channels))
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    top = 1 - HEADER_PX / height
    n = max(len(channels), 1)
    row = top / n
    fig.text(0.01, 1 - 12 / height, _title(result), fontsize=12, weight="bold", va="top")
    fig.text(0.01, 1 - 38 / height, _summary(result), fontsize=9.5, va="top")
    handles = [Patch(color=c, alpha=0.35, label=label) for c, label in KINDS.values()] + [
        Patch(color="0.6", alpha=0.5, label="masked artefact"),
        Line2D([], [], color="#d62728", ls="--", label="MVC threshold"),
        Line2D([], [], color="#1f77b4", ls=":", label="onset level"),
        Line2D([], [], color="0.5", ls=":", label="rest level"),
    ]
    fig.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(0.01, 1 - 62 / height),
        ncols=len(handles),
        fontsize=8,
        frameon=False,
    )
    for k, ch in enumerate(channels):
        bottom = top - (k + 1) * row
        ax = fig.add_axes((0.055, bottom + 0.13 * row, 0.935, 0.74 * row))
        _channel(ax, ch, traces[ch["name"]])
    if not channels:
        fig.text(0.5, 0.4, "no EMG channel to show", ha="center", fontsize=12)
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _title(result: dict[str, Any]) -> str:
    parts = [str(result.get("file") or "recording")]
    if result.get("recorded_at"):
        parts.append(str(result["recorded_at"])[:16].replace("T", " "))
    if result.get("duration_s") is not None:
        parts.append(f"{result['duration_s']:.0f} s")
    return "  \u00b7  ".join(parts)


def _summary(result: dict[str, Any]) -> str:
    parts = []
    if result.get("overall_compliance") is not None:
        parts.append(f"compliance {100 * result['overall_compliance']:.0f} %")
    if result.get("symmetry") is not None:
        parts.append(f"symmetry {100 * result['symmetry']:.0f} %")
    meta = result.get("metadata") or {}
    if meta.get("game_name"):
        level = f" level {meta['game_level']}" if meta.get("game_level") is not None else ""
        parts.append(f"{meta['game_name']}{level}")
    if meta.get("game_score") is not None:
        parts.append(f"game score {meta['game_score']:g}")
    parts.append(f"analysis {result.get('analysis_version', '?')}")
    return "  \u00b7  ".join(parts)


def _binned(
    rate: float, env: np.ndarray, masked: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time, envelope maximum and 'any masked' per bin, at most ``MAX_POINTS`` bins."""
    n = env.size
    step = max(1, int(np.ceil(n / MAX_POINTS)))
    m = n // step * step
    if step == 1 or m == 0:
        return np.arange(n) / rate, env, masked
    t = (np.arange(m // step) * step + step / 2) / rate
    env_max = env[:m].reshape(-1, step).max(axis=1)
    mask_any = np.asarray(masked[:m].reshape(-1, step).any(axis=1))
    return t, env_max, mask_any


def _channel(ax: Axes, ch: dict[str, Any], trace: Any) -> None:
    scale = _TO_MICROVOLT.get(str(ch.get("unit") or "").strip(), 1.0)
    unit = "\u00b5V" if str(ch.get("unit") or "").strip() in _TO_MICROVOLT else str(ch.get("unit"))
    env = np.asarray(trace.envelope, dtype=float) * scale
    masked = np.asarray(trace.masked, dtype=bool)
    t, env_b, mask_b = _binned(float(trace.rate), env, masked)
    for c in ch.get("contractions") or []:
        colour = KINDS[contraction_kind(c)][0]
        ax.axvspan(c["start_ms"] / 1000, c["end_ms"] / 1000, color=colour, alpha=0.3, lw=0)
    if mask_b.any():
        ax.fill_between(
            t, 0, 1, where=mask_b, step="mid", color="0.6", alpha=0.5, lw=0,
            transform=ax.get_xaxis_transform(),
        )  # fmt: skip
    ax.plot(t, env_b, lw=0.7, color="0.1")
    levels = [
        ("mvc_threshold", "#d62728", "--"),
        ("onset_level", "#1f77b4", ":"),
        ("rest_level", "0.5", ":"),
    ]
    shown = [float(env_b.max()) if env_b.size else 0.0]
    for field, colour, style in levels:
        value = ch.get(field)
        if value is not None and value > 0:
            ax.axhline(value * scale, color=colour, ls=style, lw=1.0)
            shown.append(value * scale)
    ax.set_ylim(0, max(shown) * 1.08 or 1.0)
    ax.set_xlim(0, max(float(t[-1]) if t.size else 1.0, 1e-3))
    ax.set_ylabel(f"envelope [{unit}]", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title(_channel_line(ch, scale, unit), fontsize=9, loc="left")
    ax.set_xlabel("time (s)", fontsize=8, labelpad=1)


def _channel_line(ch: dict[str, Any], scale: float, unit: str) -> str:
    name = ch["name"]
    if not ch.get("usable", True):
        # the first warning says why; the rest are in the results
        reason = (ch.get("warnings") or ["not analysed"])[0]
        return _fit(f"{name}  \u2014  UNUSABLE: {reason}")
    total = ch.get("contractions_total") or 0
    parts = [
        f"{total} of {ch.get('expected_contractions')} contractions",
        f"{ch.get('contractions_good')} good",
        f"{ch.get('contractions_mvc_compliant')} \u2265 {_percentage(ch)} % MVC",
        f"{ch.get('contractions_duration_compliant')} \u2265 "
        f"{(ch.get('duration_threshold_ms') or 0) / 1000:g} s",
    ]
    if ch.get("mvc_value") is not None:
        method = _METHOD_WORDS.get(str(ch.get("mvc_method")), ch.get("mvc_method"))
        parts.append(f"MVC {ch['mvc_value'] * scale:.0f} {unit} ({method})")
    if ch.get("compliance_rate") is not None:
        parts.append(f"compliance {100 * ch['compliance_rate']:.0f} %")
    return _fit(f"{name}  \u2014  " + ",  ".join(parts))


#: characters of a channel's title line that fit the picture's width at its font size
TITLE_CHARS = 190


def _fit(text: str) -> str:
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1].rstrip() + "\u2026"


def _percentage(ch: dict[str, Any]) -> str:
    if ch.get("mvc_value") and ch.get("mvc_threshold") is not None:
        return f"{100 * ch['mvc_threshold'] / ch['mvc_value']:.0f}"
    return "?"
