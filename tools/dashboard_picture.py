"""Draw a stack's CloudWatch dashboard from its definition, as an SVG of its widget layout.

    python -m tools.dashboard_picture [--stack dev] [--out docs/dashboard.svg]

The program runs offline (tools/offline.py); the picture shows what the dashboard body places
where: each widget's title and the metrics it plots (no data: nothing here reaches AWS).
"""

from __future__ import annotations

import argparse
import json
from html import escape
from pathlib import Path
from typing import Any

from tools.offline import ROOT, OfflineRun, load_stack_config, run_offline

DEFAULT_OUT = ROOT / "docs" / "dashboard.svg"
COLUMN = 40  # pixels per dashboard grid column (24 columns)
ROW = 34  # pixels per grid row
LINE = 13
MAX_LINES = 12


def _metric_line(entry: list[Any]) -> str:
    options = entry[-1] if isinstance(entry[-1], dict) else {}
    _, name, *pairs = entry[:-1] if options else entry
    dims = ", ".join(f"{pairs[i]}={_short(str(pairs[i + 1]))}" for i in range(0, len(pairs), 2))
    label = options.get("label")
    return f"{label}: {name}" if label else f"{name} {dims}"


def _short(value: str) -> str:
    # Resource ids and DNS names are long; their first part says which one it is.
    if value.startswith(("targetgroup/", "net/")):
        return value.split("/")[1]
    return value.split(".", maxsplit=1)[0]


def _lines(widget: dict[str, Any], alarm_names: dict[str, str]) -> list[str]:
    props = widget["properties"]
    if widget["type"] == "text":
        return [line.lstrip("# ") for line in props["markdown"].splitlines()]
    if widget["type"] == "alarm":
        return [alarm_names.get(arn, arn) for arn in props["alarms"]]
    return [_metric_line(entry) for entry in props["metrics"]]


def render(body: dict[str, Any], alarm_names: dict[str, str]) -> str:
    """The SVG text of a dashboard body."""
    widgets = body["widgets"]
    height = max(w["y"] + w["height"] for w in widgets) * ROW
    width = 24 * COLUMN
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
        f'<rect width="{width}" height="{height}" fill="#f4f5f7"/>',
    ]
    for widget in widgets:
        x, y = widget["x"] * COLUMN + 3, widget["y"] * ROW + 3
        w, h = widget["width"] * COLUMN - 6, widget["height"] * ROW - 6
        title = widget["properties"].get("title", "")
        out.append(
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="4" fill="#ffffff" '
            'stroke="#c9ccd1"/>'
        )
        lines = _lines(widget, alarm_names)
        text_y = y + 16
        if title:
            out.append(
                f'<text x="{x + 8}" y="{text_y}" font-size="12" font-weight="bold">'
                f"{escape(title)}</text>"
            )
            text_y += 16
        columns = 2 if widget["type"] == "alarm" else 1
        per_column = MAX_LINES if columns == 1 else max(1, (h - 30) // LINE)
        shown = lines[: per_column * columns]
        for i, line in enumerate(shown):
            column, row = divmod(i, per_column)
            out.append(
                f'<text x="{x + 8 + column * (w // columns)}" y="{text_y + row * LINE}" '
                f'fill="#333">{escape(line[:95])}</text>'
            )
        if len(lines) > len(shown):
            out.append(
                f'<text x="{x + w - 8}" y="{y + h - 6}" text-anchor="end" fill="#777">'
                f"+{len(lines) - len(shown)} more</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def picture(run: OfflineRun) -> str:
    (dashboard,) = run.of_type("aws:cloudwatch/dashboard:Dashboard")
    names = {
        alarm.state["arn"]: str(alarm.inputs.get("name") or alarm.state.get("name"))
        for alarm in run.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")
    }
    return render(json.loads(dashboard.inputs["dashboardBody"]), names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    run = run_offline(load_stack_config(args.stack), stack=args.stack)
    args.out.write_text(picture(run))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
