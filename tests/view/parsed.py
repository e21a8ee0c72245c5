"""Read a report page back as a person scans it: its sections' text, the targets table's cells, its charts."""

from __future__ import annotations

import dataclasses
from html.parser import HTMLParser

VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "source"}


@dataclasses.dataclass
class Chart:
    """One inline SVG: its title and how many bars, marks and points it draws."""

    title: str = ""
    bars: int = 0
    counted: int = 0  # the sum of the bars' data-count: queries a histogram accounts for
    marks: int = 0
    points: int = 0  # the data points of a trace (legend marks are not counted)
    texts: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Row:
    """One table row: its attributes, its cells' text and classes (header cells included), its whole text."""

    attrs: dict[str, str]
    cells: list[str] = dataclasses.field(default_factory=list)
    classes: list[str] = dataclasses.field(default_factory=list)

    @property
    def text(self) -> str:
        return " | ".join(self.cells)


@dataclasses.dataclass
class ParsedPage:
    """What the page shows, by section id."""

    sections: dict[str, str] = dataclasses.field(default_factory=dict)
    cells: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    charts: dict[str, list[Chart]] = dataclasses.field(default_factory=dict)
    attributes: list[str] = dataclasses.field(default_factory=list)
    tags: set[str] = dataclasses.field(default_factory=set)
    rows: list[Row] = dataclasses.field(default_factory=list)
    images: list[str] = dataclasses.field(default_factory=list)  # each <img>'s src
    commands: list[str] = dataclasses.field(default_factory=list)  # the text of each <code class="cmd">

    def rows_in(self, section: str) -> list[Row]:
        """The rows of one section's tables."""
        return [r for r in self.rows if r.attrs.get("section") == section]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = ParsedPage()
        self.section: str | None = None
        self.row: str | None = None
        self.field: str | None = None
        self.chart: Chart | None = None
        self.in_svg_title = False
        self.in_series = False
        self.tr: Row | None = None
        self.in_cmd = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.page.tags.add(tag)
        self.page.attributes += [f"{k}={v}" for k, v in a.items()]
        if tag == "section":
            self.section = a.get("id", "")
            self.page.sections.setdefault(self.section, "")
        elif tag == "img":
            self.page.images.append(a.get("src", ""))
        elif tag == "code" and "cmd" in a.get("class", "").split():
            self.in_cmd = True
            self.page.commands.append("")
        if tag == "tr":
            self.tr = Row({**a, "section": self.section or ""})
            self.page.rows.append(self.tr)
        elif tag in ("td", "th") and self.tr is not None:
            self.tr.cells.append("")
            self.tr.classes.append(a.get("class", ""))
        if tag == "tr" and "data-file" in a:
            self.row = a["data-file"]
        elif tag == "td" and self.row is not None and "data-field" in a:
            self.field = a["data-field"]
            self.page.cells[(self.row, self.field)] = ""
        elif tag == "svg":
            self.chart = Chart()
            self.page.charts.setdefault(self.section or "", []).append(self.chart)
        elif self.chart is not None:
            self.chart.bars += tag == "rect" and "bar" in a.get("class", "")
            self.chart.counted += int(a.get("data-count") or 0)
            self.chart.marks += tag == "line" and "mark" in a.get("class", "")
            self.chart.points += tag == "circle" and self.in_series
            self.in_series = self.in_series or (tag == "g" and "series" in a.get("class", ""))
            self.in_svg_title = tag == "title" and not self.chart.title

    def handle_endtag(self, tag: str) -> None:
        if tag == "section":
            self.section = None
        elif tag == "tr":
            self.row = None
            self.tr = None
        elif tag == "code":
            self.in_cmd = False
        elif tag == "td":
            self.field = None
        elif tag == "svg":
            self.chart = None
        elif tag == "title":
            self.in_svg_title = False
        elif tag == "g":
            self.in_series = False

    def handle_data(self, data: str) -> None:
        if self.section is not None:
            self.page.sections[self.section] += data
        if self.row is not None and self.field is not None:
            self.page.cells[(self.row, self.field)] += data
        if self.tr is not None and self.tr.cells:
            self.tr.cells[-1] += data
        if self.in_cmd:
            self.page.commands[-1] += data
        if self.chart is not None:
            if self.in_svg_title:
                self.chart.title += data
            else:
                self.chart.texts.append(data)


def parse_page(html: str) -> ParsedPage:
    """Parse a report page."""
    parser = _Parser()
    parser.feed(html)
    parser.close()
    return parser.page
