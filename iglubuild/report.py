"""A run's record (iglubuild.runrecord) as a page, as text, or as JSON.

The page is one self-contained HTML file: plotly draws the timeline (one lane
per job slot, a bar per step coloured by step, idle time in grey, the
critical path as a line through its packages) and the load curve under it on
a shared time axis; plotly.js is embedded, so the page opens with no network.
plotly was chosen because it draws interactive Gantt-like bars and line
charts from plain lists (no pandas) into one file, is widely used and kept,
and its hover boxes carry the per-step detail a static picture cannot. Below
the chart, plain HTML tables: packages by time, the farm's share.

plotly is an optional dependency (`pip install 'iglubuild[report]'`); text
and JSON reports need nothing beyond the record.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

from iglubuild.errors import ToolMissingError
from iglubuild.runrecord import PackageRecord, RunRecord

# One colour per step; steps not named here (a post-build step) share the last.
STEP_COLOURS = {
    "setup": "#9e9e9e", "sysroot": "#8d6e63", "unpack": "#ffb300", "prepare": "#7cb342",
    "build": "#1e88e5", "check": "#8e24aa", "package": "#00897b", "pack": "#f4511e",
}
OTHER_COLOUR = "#546e7a"
IDLE_COLOUR = "#e0e0e0"
CRITICAL_COLOUR = "#d50000"
TOP_PACKAGES = 10  # in the text summary


def _lane(n: int) -> str:
    return f"slot {n}"


def idle_spans(run: RunRecord) -> dict[int, list[tuple[float, float]]]:
    """Per lane, the spans in [0, elapsed] when nothing ran in it."""
    busy: dict[int, list[tuple[float, float]]] = {n: [] for n in range(1, run.jobs + 1)}
    for pkg in run.packages:
        busy.setdefault(pkg.lane, []).append((pkg.start, pkg.end))
    idle: dict[int, list[tuple[float, float]]] = {}
    for lane, spans in busy.items():
        t, gaps = 0.0, []
        for start, end in sorted(spans):
            if start > t:
                gaps.append((t, start))
            t = max(t, end)
        if run.elapsed > t:
            gaps.append((t, run.elapsed))
        idle[lane] = gaps
    return idle


def text_lines(run: RunRecord) -> list[str]:
    """A summary for terminals: the run, its slowest packages, steps, load, farm."""
    built = [p for p in run.packages if p.outcome == "built"]
    failed = [p for p in run.packages if p.outcome == "failed"]
    slots = run.jobs * run.elapsed
    busy = sum(p.seconds for p in run.packages)
    out = [f"run {run.run_id}: {run.command}, {run.outcome}, {run.elapsed:.1f} s, "
           f"{len(built)} built, {len(failed)} failed, {len(run.up_to_date)} up to date, "
           f"{run.jobs} slot(s) on {run.cpus} CPU(s), executor {run.executor}"]
    if slots > 0:
        out.append(f"slots busy {100 * busy / slots:.0f}% of the run")
    if run.critical_path:
        out.append(f"critical path {run.critical_path_seconds:.1f} s: "
                   + " -> ".join(run.critical_path))
    out.append("slowest packages:")
    for pkg in sorted(run.packages, key=lambda p: -p.seconds)[:TOP_PACKAGES]:
        out.append("  " + _package_line(pkg))
    totals: dict[str, float] = {}
    for pkg in run.packages:
        for step in pkg.phases:
            totals[step.name] = totals.get(step.name, 0.0) + step.end - step.start
    if totals:
        out.append("time per step: " + ", ".join(
            f"{name} {secs:.1f} s" for name, secs in sorted(totals.items(), key=lambda x: -x[1])))
    if run.load:
        loads = [s.load1 for s in run.load]
        out.append(f"load average (1 min) {min(loads):.2f} .. {max(loads):.2f}, "
                   f"mean {sum(loads) / len(loads):.2f}, {len(run.load)} samples")
    farm = farm_totals(run)
    if farm is not None:
        remote, local, hosts = farm
        out.append(f"farm: {remote} of {remote + local} compiles remote"
                   + (" (" + ", ".join(f"{h} {n}" for h, n in sorted(hosts.items())) + ")"
                      if hosts else ""))
    for name, cause in run.blocked.items():
        out.append(f"blocked: {name} (needs {cause})")
    return out


def _package_line(pkg: PackageRecord) -> str:
    cpu = f", CPU {pkg.cpu_seconds:.1f} s" if pkg.cpu_seconds is not None else ""
    mem = f", peak {pkg.peak_rss_kib / 1024:.0f} MiB" if pkg.peak_rss_kib is not None else ""
    waited = pkg.start - pkg.ready
    wait = f", waited {waited:.1f} s for a slot" if waited >= 0.05 else ""
    return f"{pkg.name} {pkg.seconds:.1f} s {pkg.outcome}{cpu}{mem}{wait}"


def farm_totals(run: RunRecord) -> tuple[int, int, dict[str, int]] | None:
    """(remote, local, compiles per volunteer) over the run, or None without the farm."""
    shares = [p.farm for p in run.packages if p.farm is not None]
    if not shares:
        return None
    hosts: dict[str, int] = {}
    for share in shares:
        for host, n in share.hosts.items():
            hosts[host] = hosts.get(host, 0) + n
    return sum(s.remote for s in shares), sum(s.local for s in shares), hosts


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError as exc:
        raise ToolMissingError("the report page needs plotly, which is not installed",
                               hint="pip install 'iglubuild[report]', or use "
                                    "--format text / --format json") from exc
    return go, make_subplots


def figure(run: RunRecord) -> Any:
    """The timeline over the load curve, as a plotly Figure."""
    go, make_subplots = _plotly()
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28],
                        vertical_spacing=0.06,
                        subplot_titles=("job slots", "machine load"))
    lanes = [_lane(n) for n in range(run.jobs, 0, -1)]
    by_step: dict[str, dict[str, list[Any]]] = {}
    for pkg in run.packages:
        longest = max(pkg.phases, key=lambda s: s.end - s.start, default=None)
        for step in pkg.phases:
            bars = by_step.setdefault(step.name, {"x": [], "base": [], "y": [], "text": [],
                                                  "hover": []})
            bars["x"].append(max(step.end - step.start, 0.001))
            bars["base"].append(step.start)
            bars["y"].append(_lane(pkg.lane))
            bars["text"].append(pkg.name if step is longest else "")
            usage = ""
            if step.cpu_seconds is not None:
                usage = f"<br>CPU {step.cpu_seconds:.1f} s"
            if step.peak_rss_kib is not None:
                usage += f", peak {step.peak_rss_kib / 1024:.0f} MiB"
            bars["hover"].append(
                f"<b>{html.escape(pkg.name)}</b> {html.escape(step.name)} ({step.outcome})"
                f"<br>{step.start:.1f} → {step.end:.1f} s ({step.end - step.start:.1f} s)"
                + usage)
    idle = idle_spans(run)
    idle_x = [end - start for spans in idle.values() for start, end in spans]
    fig.add_trace(go.Bar(
        orientation="h", name="idle", x=idle_x,
        base=[start for spans in idle.values() for start, _ in spans],
        y=[_lane(lane) for lane, spans in idle.items() for _ in spans],
        marker={"color": IDLE_COLOUR}, hovertemplate="idle %{x:.1f} s<extra></extra>"),
        row=1, col=1)
    for step_name, bars in by_step.items():
        fig.add_trace(go.Bar(
            orientation="h", name=step_name, x=bars["x"], base=bars["base"], y=bars["y"],
            text=bars["text"], textposition="inside", insidetextanchor="start",
            hovertext=bars["hover"], hoverinfo="text",
            marker={"color": STEP_COLOURS.get(step_name, OTHER_COLOUR),
                    "line": {"color": "#ffffff", "width": 0.5}}),
            row=1, col=1)
    packages = {p.name: p for p in run.packages}
    path = [packages[n] for n in run.critical_path if n in packages]
    if path:
        xs: list[float] = []
        ys: list[str] = []
        for pkg in path:
            xs += [pkg.start, pkg.end]
            ys += [_lane(pkg.lane)] * 2
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines+markers", name="critical path",
            line={"color": CRITICAL_COLOUR, "width": 3}, marker={"size": 7},
            hovertext=[p.name for p in path for _ in (0, 1)], hoverinfo="text"),
            row=1, col=1)
    if run.load:
        t = [s.t for s in run.load]
        fig.add_trace(go.Scatter(x=t, y=[s.load1 for s in run.load], mode="lines",
                                 name="load average (1 min)", line={"color": "#37474f"}),
                      row=2, col=1)
        fig.add_trace(go.Scatter(
            x=t, y=[(s.busy or 0.0) * run.cpus for s in run.load], mode="lines",
            name="CPUs busy", line={"color": "#43a047", "dash": "dot"}), row=2, col=1)
        fig.add_hline(y=run.cpus, line={"color": "#b0bec5", "dash": "dash"}, row=2, col=1)
    fig.update_yaxes(categoryorder="array", categoryarray=lanes, row=1, col=1)
    fig.update_xaxes(title_text="seconds since the run started", row=2, col=1)
    fig.update_layout(barmode="overlay", height=320 + 36 * run.jobs, bargap=0.25,
                      legend={"orientation": "h", "y": -0.18}, margin={"t": 40, "r": 20},
                      uniformtext={"minsize": 9, "mode": "hide"},
                      plot_bgcolor="#ffffff")
    return fig


def html_page(run: RunRecord) -> str:
    """One self-contained page: title, facts, the chart, the tables."""
    chart = figure(run).to_html(full_html=False, include_plotlyjs=True,
                                div_id="timeline", config={"displaylogo": False})
    facts = "".join(f"<li>{html.escape(line)}</li>" for line in text_lines(run)[:3])
    rows = "".join(_package_row(p) for p in sorted(run.packages, key=lambda p: -p.seconds))
    farm = farm_totals(run)
    farm_html = ""
    if farm is not None:
        remote, local, hosts = farm
        host_rows = "".join(f"<tr><td>{html.escape(h)}</td><td>{n}</td></tr>"
                            for h, n in sorted(hosts.items()))
        farm_html = (f"<h2>farm</h2><p>{remote} of {remote + local} compiles ran on "
                     f"volunteers, {local} locally.</p><table><tr><th>volunteer</th>"
                     f"<th>compiles</th></tr>{host_rows}</table>")
    up = ", ".join(html.escape(n) for n in run.up_to_date) or "none"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>iglubuild run {html.escape(run.run_id)}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #212121; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #cfd8dc; padding: 0.2em 0.6em; text-align: left; }}
td.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.failed td {{ background: #ffebee; }}
</style></head><body>
<h1>iglubuild {html.escape(run.command)}: run {html.escape(run.run_id)}</h1>
<p>started {html.escape(run.started_at)}</p>
<ul id="facts">{facts}</ul>
{chart}
<h2>packages by time</h2>
<table id="packages"><tr><th>package</th><th>outcome</th><th>seconds</th><th>slot</th>
<th>waited for a slot (s)</th><th>last dependency</th><th>CPU s</th><th>peak MiB</th>
<th>steps</th><th>farm remote/local</th></tr>
{rows}</table>
{farm_html}
<p>up to date, not rebuilt: {up}</p>
</body></html>
"""


def _package_row(pkg: PackageRecord) -> str:
    steps = ", ".join(f"{s.name} {s.end - s.start:.1f}" for s in pkg.phases)
    cpu = f"{pkg.cpu_seconds:.1f}" if pkg.cpu_seconds is not None else "-"
    mem = f"{pkg.peak_rss_kib / 1024:.0f}" if pkg.peak_rss_kib is not None else "-"
    farm = f"{pkg.farm.remote}/{pkg.farm.local}" if pkg.farm is not None else "-"
    cells: Iterable[tuple[str, bool]] = (
        (pkg.name, False), (pkg.outcome, False), (f"{pkg.seconds:.1f}", True),
        (str(pkg.lane), True), (f"{max(0.0, pkg.start - pkg.ready):.1f}", True),
        (pkg.waited_for or "-", False), (cpu, True), (mem, True), (steps, False),
        (farm, True))
    tds = "".join(f'<td{" class=n" if num else ""}>{html.escape(text)}</td>'
                  for text, num in cells)
    return f'<tr class="{pkg.outcome}" data-package="{html.escape(pkg.name)}">{tds}</tr>\n'
