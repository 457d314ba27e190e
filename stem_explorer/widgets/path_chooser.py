"""PathChooser: pick data files on the kernel's machine by path.

Detector files are gigabytes to terabytes and already lie on the machine (or shared
file system) the kernel runs on, so the chooser names a path there and nothing is
uploaded (``ipywidgets.FileUpload`` would send the whole file through the browser and
hold it in the kernel's memory). It is a folder box, the folder's sub-folders and
data sets (:func:`stem_explorer.io.listing.browse`: files with a reader's suffix,
folders a reader recognises) and a path box, plain ipywidgets: the maintained
ready-made alternative, ``ipyfilechooser``, had its last release in 2021 and lists every file
rather than the data sets.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Callable

import ipywidgets as widgets

from ..errors import StemExplorerError
from ..io.listing import browse

#: The entry of the listing that leads to the parent folder.
PARENT = ".."


class PathChooser(widgets.VBox):
    """A folder's data sets to pick from, and a path box; *add* hands the path to the
    functions registered with :meth:`on_add`.

    Choosing a folder in the list opens it; choosing a data set puts its path in the
    path box. A path can also be typed.
    """

    def __init__(self, folder="."):
        self.folder = widgets.Text(description="folder", continuous_update=False, layout={"width": "420px"})
        self.entries = widgets.Select(options=[], rows=6, layout={"width": "420px"})
        self.path = widgets.Text(description="path", placeholder="a data set's path", layout={"width": "420px"})
        self.add_button = widgets.Button(description="add", icon="plus", tooltip="add this data set", layout={"width": "80px"})
        self.message = widgets.HTML()
        self._handlers: list[Callable[[str], None]] = []
        self.folder.observe(lambda _: self._list(), names="value")
        self.entries.observe(self._on_entry, names="value")
        self.add_button.on_click(lambda _: self._add())
        super().__init__([self.folder, self.entries, widgets.HBox([self.path, self.add_button]), self.message])
        self.add_class("se-path-chooser")
        self.folder.value = str(Path(os.path.expanduser(os.fspath(folder))).resolve())

    def on_add(self, fn: Callable[[str], None]) -> None:
        """Call ``fn(path)`` when *add* is pressed with a path in the path box."""
        self._handlers.append(fn)

    def _list(self) -> None:
        try:
            folders, datasets = browse(self.folder.value)
        except StemExplorerError as exc:
            self.entries.options = []
            self._say(str(exc), error=True)
            return
        options = [(PARENT + "/", PARENT)]
        options += [(Path(p).name + "/", p) for p in folders]
        options += [(Path(p).name, p) for p in datasets]
        self.entries.value = None
        self.entries.options = options
        self._say(f"{len(datasets)} data set(s) here" if datasets else "no data sets here (files with a reader's suffix)")

    def _on_entry(self, change) -> None:
        chosen = change["new"]
        if chosen is None:
            return
        if chosen == PARENT:
            self.folder.value = str(Path(self.folder.value).parent)
        elif os.path.isdir(chosen) and chosen not in self._datasets():
            self.folder.value = chosen
        else:
            self.path.value = chosen

    def _datasets(self) -> set:
        return {value for label, value in self.entries.options if not label.endswith("/")}

    def _add(self) -> None:
        path = self.path.value.strip()
        if not path:
            self._say("choose a data set in the list or type its path first", error=True)
            return
        for fn in self._handlers:
            fn(path)
        self._say(f"added {path}")

    def _say(self, text: str, *, error: bool = False) -> None:
        colour = "#c62828" if error else "#555"
        self.message.value = f'<span style="color:{colour}">{html.escape(text)}</span>'
