"""Judge the analysis on real recordings: counts against the game's, and contractions on artefact.

Usage: ``.venv/bin/python bench/validate_real.py [FOLDER] [--plots OUTDIR] [--json OUT.json]``.
FOLDER defaults to ``$EMGD_REAL_SAMPLES``. Every ``*.c3d`` in it is analysed with
``emg_core.analyze`` and each channel judged by ``bench/realcheck.py`` (the same definitions the
tests assert; docs/validation.md explains them). Files without a GHOSTLY activated channel
(vendor recordings) are judged too, with no game count ('-').

Prints one table row per channel and ends with a one-line summary starting with ``PASS`` or
``MISS``; ``--json`` writes every figure to a file, ``--plots`` one PNG per file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import realcheck

ENV = "EMGD_REAL_SAMPLES"
LEGEND = (
    "tol: within max(2, 20 %) of the game; stuck: s of stuck samples (judge); hum: ours/judge "
    "(! = neither cleaned nor flagged); rest/span/drop: contractions lying on rest / holding "
    ">= 1 s of rest / on stuck samples; mvcD: MVC window on stuck samples (? = not reported)"
)


def _fmt(value: Any, spec: str = "") -> str:
    return "-" if value is None else format(value, spec)


def _game(v: realcheck.Verdict) -> str:
    if v.game is None:
        return "-"
    lo, hi = v.game_range
    return f"{v.game} ({lo}-{hi})"


def judge_file(path: Path, plots: Path | None) -> dict[str, Any]:
    """Analyse one file, judge each channel, draw its plot; a dict for the JSON report."""
    import emg_core

    t0 = time.perf_counter()
    try:
        result = emg_core.analyze(path)
    except emg_core.EmgError as exc:
        return {"file": path.name, "error": exc.reason, "analyze_s": time.perf_counter() - t0}
    except Exception as exc:  # a crash on one file must not hide the verdicts on the others
        error = f"analysis crashed: {type(exc).__name__}: {exc}"
        return {"file": path.name, "error": error, "analyze_s": time.perf_counter() - t0}
    analyze_s = time.perf_counter() - t0
    data = realcheck.load_channels(path, [c.name for c in result.channels])
    channels = []
    for ch in result.channels:
        d = data[ch.name]
        v = realcheck.judge(ch, d.raw, d.activated, d.rate)
        channels.append((ch, v))
    out: dict[str, Any] = {
        "file": path.name,
        "analyze_s": analyze_s,
        "duration_s": result.duration_s,
        "channels": [
            {
                "name": ch.name,
                "ours": ch.contractions_total,
                "good": ch.contractions_good,
                "masked_s": ch.masked_s,
                "mains_fraction": ch.mains_fraction,
                "mains_hz": ch.mains_hz,
                "mains_removed": ch.mains_removed,
                "usable": ch.usable,
                "mvc_uv": realcheck.mvc_in_microvolts(ch.mvc_value, ch.unit),
                "mvc_value": ch.mvc_value,
                "unit": ch.unit,
                "mvc_source": ch.mvc_source,
                "mvc_window_ms": [ch.mvc_start_ms, ch.mvc_end_ms],
                "warnings": list(ch.warnings),
                "judge": v.to_dict(),
            }
            for ch, v in channels
        ],
        "verdicts": [v for _, v in channels],
    }
    if plots is not None:
        out["plot"] = _plot(result, path, plots)
    return out


def _plot(result, path: Path, outdir: Path) -> str:
    """Draw the file's plot; the path written, or why not (a plot never stops the run)."""
    from daemon.cmd_analyze import plot
    from emg_core.analysis import channel_traces

    out = outdir / f"{path.stem}.png"
    try:
        plot(result, channel_traces(path), str(out))
    except Exception as exc:  # the plot is being reworked; a failure is reported, not fatal
        return f"plot failed: {type(exc).__name__}: {exc}"
    return str(out)


def print_file(report: dict[str, Any]) -> None:
    print(f"\n{report['file']}  ({report['analyze_s'] * 1000:.0f} ms)")
    if "error" in report:
        print(f"  not analysed: {report['error']}")
        return
    header = (
        f"  {'channel':<22} {'ours':>4} {'game (range)':>12} {'tol':>3} {'good':>4} "
        f"{'mask s':>6} {'stuck':>5} {'hum ours/judge':>14} {'Hz':>5} {'usable':>6} {'MVC uV':>8} "
        f"{'rest':>4} {'span':>4} {'drop':>4} {'mvcD':>4}  mvc source / warnings"
    )
    print(header)
    for row, v in zip(report["channels"], report["verdicts"], strict=True):
        tol = {None: "-", True: "ok", False: "NO"}[v.within_tolerance]
        hum = f"{row['mains_fraction']:.0%}/{v.judge_hum_fraction:.0%}"
        if not v.hum_handled:
            hum += "!"
        mvc_d = "?" if v.mvc_window_missing else ("YES" if v.mvc_on_dropout else "no")
        print(
            f"  {row['name'][:22]:<22} {_fmt(row['ours']):>4} {_game(v):>12} {tol:>3} "
            f"{_fmt(row['good']):>4} {row['masked_s']:>6.1f} {v.stuck_s:>5.1f} {hum:>14} "
            f"{_fmt(row['mains_hz'], '.1f'):>5} {'yes' if row['usable'] else 'NO':>6} "
            f"{_fmt(row['mvc_uv'], '.0f'):>8} {len(v.on_rest):>4} {len(v.spanning_rest):>4} "
            f"{len(v.on_dropout):>4} {mvc_d:>4}  {row['mvc_source'] or '-'}"
        )
        for w in row["warnings"]:
            print(f"  {'':<22}   ! {w}")
    if "plot" in report:
        print(f"  plot: {report['plot']}")


def summarise(reports: list[dict[str, Any]]) -> dict[str, Any]:
    verdicts = [v for r in reports for v in r.get("verdicts", [])]
    clean = [v for v in verdicts if v.clean and v.game is not None]
    hum = [v for v in verdicts if not v.clean]
    s = {
        "files": len(reports),
        "files_not_analysed": sum("error" in r for r in reports),
        "channels": len(verdicts),
        "clean_within_tolerance": sum(bool(v.within_tolerance) for v in clean),
        "clean_with_game": len(clean),
        "contractions_on_rest": sum(len(v.on_rest) for v in verdicts),
        "contractions_spanning_rest": sum(len(v.spanning_rest) for v in verdicts),
        "contractions_on_dropout": sum(len(v.on_dropout) for v in verdicts),
        "contractions_bridging_dropout": sum(len(v.bridged) for v in verdicts),
        "mvc_windows_on_dropout": sum(v.mvc_on_dropout for v in verdicts),
        "mvc_windows_unreported": sum(v.mvc_window_missing for v in verdicts),
        "hum_handled": sum(v.hum_handled for v in hum),
        "hum_channels": len(hum),
    }
    s["pass"] = (
        s["files_not_analysed"] == 0
        and s["clean_within_tolerance"] == s["clean_with_game"]
        and s["contractions_on_rest"] == 0
        and s["contractions_spanning_rest"] == 0
        and s["contractions_on_dropout"] == 0
        and s["mvc_windows_on_dropout"] == 0
        and s["mvc_windows_unreported"] == 0
        and s["hum_handled"] == s["hum_channels"]
    )
    return s


def summary_line(s: dict[str, Any], seconds: float) -> str:
    not_analysed = f", {s['files_not_analysed']} not analysed" if s["files_not_analysed"] else ""
    return (
        f"{'PASS' if s['pass'] else 'MISS'}: {s['files']} files{not_analysed}, "
        f"{s['channels']} channels: clean channels within tolerance "
        f"{s['clean_within_tolerance']}/{s['clean_with_game']}, "
        f"contractions on rest {s['contractions_on_rest']}, "
        f"contractions spanning >=1 s rest {s['contractions_spanning_rest']}, "
        f"contractions/MVC windows on dropout {s['contractions_on_dropout']}/"
        f"{s['mvc_windows_on_dropout']} ({s['mvc_windows_unreported']} MVC windows unreported, "
        f"{s['contractions_bridging_dropout']} bursts held through a dropout), "
        f"hum channels cleaned-or-flagged {s['hum_handled']}/{s['hum_channels']} "
        f"({seconds:.1f} s)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", help=f"folder of .c3d files (default: ${ENV})")
    parser.add_argument("--plots", metavar="OUTDIR", help="write one PNG per file here")
    parser.add_argument("--json", metavar="OUT.json", help="write every figure to this file")
    args = parser.parse_args()

    folder = args.folder or os.environ.get(ENV)
    if not folder:
        parser.exit(2, f"validate_real: name a folder of .c3d files or set {ENV}\n")
    files = sorted(Path(folder).glob("*.c3d"))
    if not files:
        parser.exit(2, f"validate_real: {folder} holds no .c3d files\n")
    plots = Path(args.plots) if args.plots else None
    if plots is not None:
        plots.mkdir(parents=True, exist_ok=True)

    print(LEGEND)
    start = time.perf_counter()
    reports = []
    for path in files:
        report = judge_file(path, plots)
        print_file(report)
        reports.append(report)
    seconds = time.perf_counter() - start
    s = summarise(reports)
    if args.json:
        doc = {
            "folder": str(folder),
            "seconds": seconds,
            "summary": s,
            "files": [{k: v for k, v in r.items() if k != "verdicts"} for r in reports],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")
    print()
    print(summary_line(s, seconds), flush=True)
    return 0


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
