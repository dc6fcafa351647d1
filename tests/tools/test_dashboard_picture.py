"""The README's dashboard picture is drawn from the dev stack's dashboard definition."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.conftest import RunProgram
from tools.dashboard_picture import DEFAULT_OUT, picture


def test_the_committed_picture_is_the_current_dashboard(offline: RunProgram) -> None:
    drawn = picture(offline("pair"))
    ET.fromstring(drawn)  # noqa: S314 - our own text: well-formed SVG
    assert DEFAULT_OUT.read_text() == drawn, (
        "docs/dashboard.svg is stale: run python -m tools.dashboard_picture"
    )


def test_the_picture_names_each_widget_title(offline: RunProgram) -> None:
    import json

    (dashboard,) = offline("pair").of_type("aws:cloudwatch/dashboard:Dashboard")
    drawn = picture(offline("pair"))
    for widget in json.loads(dashboard.inputs["dashboardBody"])["widgets"]:
        title = widget["properties"].get("title")
        if title:
            assert title.replace("&", "&amp;") in drawn
