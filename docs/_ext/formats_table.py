"""``formats-table`` directive: the table of registered readers, made at build time from
:func:`stem_explorer.io.readers`, so the page lists what the package reads, plugins included."""

from docutils import nodes
from docutils.parsers.rst import Directive


def _row(*cells):
    row = nodes.row()
    for text in cells:
        entry = nodes.entry()
        entry += nodes.paragraph(text=text)
        row += entry
    return row


class FormatsTable(Directive):
    """A three-column table: reader name (``format=``), file suffixes, description."""

    has_content = False

    def run(self):
        from stem_explorer.io import readers

        table = nodes.table()
        group = nodes.tgroup(cols=3)
        table += group
        for width in (15, 25, 60):
            group += nodes.colspec(colwidth=width)
        head = nodes.thead()
        head += _row("format", "suffixes", "what it reads")
        group += head
        body = nodes.tbody()
        for plugin in readers():
            body += _row(plugin.name, " ".join(plugin.suffixes) or "(folder or URL)", plugin.description)
        group += body
        return [table]


def setup(app):
    app.add_directive("formats-table", FormatsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
