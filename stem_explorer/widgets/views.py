"""Live, zoomable image views: bqplot figures with a ``bqplot-image-gl`` ``ImageGL`` mark.

:class:`ImageView` shows a 2-D array (a virtual image over the scan, a detector frame)
with pan/zoom, colour limits from robust percentiles, linear or log display, and NaN
(positions not computed yet) shown empty. Updates are throttled (newest wins) and large
images travel downsampled from a :class:`~stem_explorer.widgets.pyramid.Pyramid`;
zooming in fetches the full-resolution region.

Calibrated axes (:meth:`ImageView.set_axes`) put the scales in physical units, shown
as ticks along the axes or as a scale bar (:meth:`ImageView.set_style`); the pick, ROI
and zoom logic keeps working in pixels, converted at the scales (:class:`.AxisMap`).
Hovering shows the pixel's coordinates and value under the figure.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

import bqplot
import ipywidgets as widgets
import numpy as np
from bqplot_image_gl import ImageGL
from bqplot_image_gl.interacts import MouseInteraction

from .limits import robust_limits
from .pyramid import Pyramid, Tile
from .scale import STYLES, SCALE_BAR_SHARE, AxisMap, colour_bar_label, format_length, nice_length, readout
from .throttle import Throttle

#: Colour maps offered by the views (bqplot ``ColorScale`` schemes).
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "Greys")
#: Interaction modes of the view: click/drag picks, rectangle ROI, or pan only.
MODES = ("pick", "roi", "pan")

#: at most this many ticks on a scan axis
MAX_AXIS_TICKS = 10


def display_values(image: np.ndarray, log: bool) -> np.ndarray:
    """What the colour scale sees: the image, or ``log1p`` of its non-negative part."""
    image = np.asarray(image, dtype=np.float32)
    if not log:
        return image
    with np.errstate(invalid="ignore"):
        return np.log1p(np.maximum(image, 0, where=np.isfinite(image), out=np.full_like(image, np.nan)))


def as_image(array: np.ndarray) -> np.ndarray:
    """A result as a 2-D image: 1-D scans become one row, extra leading axes are flattened."""
    array = np.asarray(array)
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.reshape(-1, array.shape[-1])


class ImageView(widgets.VBox):
    """A zoomable live image in a bqplot figure.

    ``set_image(array)`` may be called from any thread and as often as results arrive;
    at most ``max_rate`` images a second go to the browser, each at most ``budget``
    pixels on its longer side (a pyramid level of the visible region).

    ``on_pick(fn)`` registers ``fn(row, col)`` for clicks (and drags in ``pick`` mode);
    ``on_roi(fn)`` registers ``fn(row0, row1, col0, col1)`` (half-open pixel ranges)
    for rectangles drawn in ``roi`` mode.
    """

    def __init__(
        self,
        title: str = "",
        *,
        size: int = 400,
        colormap: str = "viridis",
        log: bool = False,
        budget: int = 512,
        max_rate: float = 30.0,
        css_class: str = "se-image-view",
    ):
        self.budget = int(budget)
        self.size = int(size)
        self._pyramid: Optional[Pyramid] = None
        self._raw: Optional[np.ndarray] = None  # the image as given (float32, 2-D)
        self._values: Optional[np.ndarray] = None  # full-resolution display values
        self._lock = threading.RLock()
        self._log = bool(log)
        self._auto_limits = True
        self._pick_handlers: list[Callable] = []
        self._roi_handlers: list[Callable] = []
        self._shown_shape: Optional[tuple] = None
        self._syncing_zoom = False
        self._y_map, self._x_map = AxisMap(), AxisMap()
        self._style = "axes"
        self._value_name, self._value_unit = "", ""
        self._marker_at: Optional[tuple] = None  # pixel-edge coordinates

        self.x_scale = bqplot.LinearScale(min=0.0, max=1.0, allow_padding=False)
        self.y_scale = bqplot.LinearScale(min=1.0, max=0.0, allow_padding=False)
        self.color_scale = bqplot.ColorScale(min=0.0, max=1.0, scheme=colormap)
        self.mark = ImageGL(
            image=np.full((1, 1), np.nan, np.float32),
            x=(0.0, 1.0),
            y=(0.0, 1.0),
            scales={"x": self.x_scale, "y": self.y_scale, "image": self.color_scale},
        )
        self.marker = bqplot.Scatter(
            x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale},
            marker="crosshair", colors=["#ff3b30"], default_size=90, stroke="white",
        )
        # a scale bar: a white line with its length above it, bottom left of the view
        self.scale_bar = bqplot.Lines(
            x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale}, colors=["white"], stroke_width=4,
        )
        self.scale_bar_label = bqplot.Label(
            x=[], y=[], text=[], scales={"x": self.x_scale, "y": self.y_scale}, colors=["white"],
            default_size=13, font_weight="bold", align="middle", y_offset=-8,
        )
        axis_style = {"tick_format": "d"}
        # the right margin holds the colour bar and its widest label, "-12.3m" (".3~s":
        # a sign, 3 digits, a point, an SI prefix; about 40 px). bqplot centres the bar
        # in the margin, so the labels end at about margin / 2 + 9 px + their width, and
        # the SVG cuts off what overflows (a 70 px margin showed 1.52k as "1.52")
        self.x_axis = bqplot.Axis(scale=self.x_scale, grid_lines="none", **axis_style)
        self.y_axis = bqplot.Axis(scale=self.y_scale, orientation="vertical", grid_lines="none", **axis_style)
        for axis in (self.x_axis, self.y_axis):  # their ticks follow the spans, zoom included
            axis.scale.observe(lambda _, axis=axis: _whole_number_ticks(axis), names=["min", "max"])
        # titled with what is shown and its unit (set_value_unit), above the bar
        self.colour_axis = bqplot.ColorAxis(
            scale=self.color_scale, orientation="vertical", side="right", num_ticks=5, tick_format=".3~s",
            label_location="middle", label_offset="-1.2em",
        )
        self.figure = bqplot.Figure(
            title=title,
            marks=[self.mark, self.marker, self.scale_bar, self.scale_bar_label],
            axes=[self.x_axis, self.y_axis, self.colour_axis],
            fig_margin={"top": 30, "bottom": 40, "left": 55, "right": 120},
            padding_x=0.0,
            padding_y=0.0,
        )
        self.figure.add_class(css_class)
        self._panzoom = bqplot.PanZoom(scales={"x": [self.x_scale], "y": [self.y_scale]})
        self._mouse = MouseInteraction(
            x_scale=self.x_scale, y_scale=self.y_scale, move_throttle=40,
            events=["click", "dragstart", "dragmove", "dragend", "mousemove", "mouseleave"], next=self._panzoom,
        )
        self._mouse.on_msg(self._on_mouse)
        self._brush = bqplot.interacts.BrushSelector(
            x_scale=self.x_scale, y_scale=self.y_scale, color="#ff9500"
        )
        self._brush.observe(self._on_brush, names=["brushing"])
        self.mode = widgets.ToggleButtons(
            options=[("pick", "pick"), ("ROI", "roi"), ("pan", "pan")],
            value="pick",
            tooltips=["click or drag to pick a frame (wheel zooms, drag pans with pan mode)",
                      "drag a rectangle: sum the frames inside", "drag pans, wheel zooms"],
            style={"button_width": "52px"},
        )
        self.mode.observe(lambda change: self._apply_mode(change["new"]), names="value")
        self.reset_button = widgets.Button(icon="expand", tooltip="reset zoom", layout={"width": "36px"})
        self.reset_button.on_click(lambda _: self.reset_zoom())
        self._apply_mode("pick")
        self._throttle = Throttle(self._send, max_rate=max_rate, on_error=self._report)
        for scale in (self.x_scale, self.y_scale):
            scale.observe(self._on_zoom, names=["min", "max"])
        self.error = None
        self.hover = widgets.HTML(layout={"min_width": "260px"})
        self.hover.add_class("se-hover")
        super().__init__(
            children=[self.figure, widgets.HBox([self.mode, self.reset_button, self.hover])],
            layout={"align_items": "center"},
        )

    # -- data ----------------------------------------------------------------------------
    def set_image(self, array: np.ndarray) -> None:
        """Show ``array`` (any real 2-D array; NaN = not computed); thread-safe, throttled."""
        image = as_image(array).astype(np.float32, copy=True)
        with self._lock:
            reshaped = self._values is None or self._values.shape != image.shape
            self._raw = image
            self._values = display_values(image, self._log)
            self._pyramid = Pyramid(self._values)
        self._throttle.submit(reshaped)

    def clear(self) -> None:
        """Forget the image and any pending update (shows nothing until the next one)."""
        self._throttle.drop()
        with self._lock:
            self._raw = self._values = self._pyramid = None
        self.mark.image = np.full((1, 1), np.nan, np.float32)

    @property
    def image(self) -> Optional[np.ndarray]:
        """The image last given to :meth:`set_image` (float32, 2-D), or None."""
        return self._raw

    @property
    def displayed(self) -> Optional[np.ndarray]:
        """The full-resolution values the colour scale maps (after log), or None."""
        return self._values

    @property
    def log(self) -> bool:
        return self._log

    def set_display(self, *, log: Optional[bool] = None, colormap: Optional[str] = None) -> None:
        """Switch log/linear display or the colour map (re-sends the current image)."""
        if colormap is not None:
            self.color_scale.scheme = colormap
        if log is not None and bool(log) != self._log:
            self._log = bool(log)
            self._auto_limits = True
            self.colour_axis.label = colour_bar_label(self._value_name, self._value_unit, self._log)
            with self._lock:
                if self._raw is None:
                    return
                self._values = display_values(self._raw, self._log)
                self._pyramid = Pyramid(self._values)
            self._throttle.submit(False)

    def set_axes(self, y: Optional[AxisMap] = None, x: Optional[AxisMap] = None) -> None:
        """Label the rows and columns with ``y`` and ``x`` (:class:`.AxisMap`; None: pixel
        indices). The same region stays in view."""
        y, x = y or AxisMap(), x or AxisMap()
        # the lock only guards the swap: the throttle's sender takes it while holding
        # its own, so calling into the throttle under it would deadlock
        with self._lock:
            if (y, x) == (self._y_map, self._x_map):
                return
            visible = self._visible() if self._values is not None else None
            self._y_map, self._x_map = y, x
        with self.x_axis.hold_sync(), self.y_axis.hold_sync():
            for axis, mapped, name in ((self.x_axis, x, "x"), (self.y_axis, y, "y")):
                axis.label = f"{name} ({mapped.unit})" if mapped.calibrated else ""
                axis.tick_format = ".4~g" if mapped.calibrated else "d"
                _whole_number_ticks(axis)
        self._apply_style()
        if visible is not None:
            self._set_view(*visible)
        if self._marker_at is not None:
            self.show_marker(*self._marker_at)

    @property
    def axes(self) -> tuple:
        """The ``(y, x)`` :class:`.AxisMap` of the view."""
        return self._y_map, self._x_map

    def set_style(self, style: str) -> None:
        """``"axes"``: calibrated ticks along both axes; ``"scale bar"``: a scale bar
        instead (views whose axes are in pixels keep their ticks)."""
        if style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}, got {style!r}")
        self._style = style
        self._apply_style()
        self._throttle.submit(False)

    @property
    def style(self) -> str:
        return self._style

    def set_value_unit(self, name: str, unit: Optional[str]) -> None:
        """Title the colour bar with what is shown (``name``) and its ``unit``."""
        self._value_name, self._value_unit = name, unit or ""
        self.colour_axis.label = colour_bar_label(name, unit, self._log)

    def set_limits(self, vmin: Optional[float] = None, vmax: Optional[float] = None) -> None:
        """Fix the colour limits (in displayed units); ``set_limits()`` returns to robust auto limits."""
        if vmin is None or vmax is None:
            self._auto_limits = True
            if self._values is not None:
                vmin, vmax = robust_limits(self._values)
            else:
                return
        else:
            if not (np.isfinite(vmin) and np.isfinite(vmax) and vmax > vmin):
                raise ValueError(f"colour limits must be finite with vmin < vmax, got {vmin!r}, {vmax!r}")
            self._auto_limits = False
        with self.color_scale.hold_sync():
            self.color_scale.min, self.color_scale.max = float(vmin), float(vmax)

    @property
    def limits(self) -> tuple[float, float]:
        return self.color_scale.min, self.color_scale.max

    # -- events --------------------------------------------------------------------------
    def on_pick(self, fn: Callable[[int, int], None]) -> None:
        self._pick_handlers.append(fn)

    def on_roi(self, fn: Callable[[int, int, int, int], None]) -> None:
        self._roi_handlers.append(fn)

    def show_marker(self, row: Optional[float], col: Optional[float]) -> None:
        """Mark one position, in pixel-edge coordinates (the centre of pixel ``(i, j)``
        is ``(i + 0.5, j + 0.5)``), or hide the marker with None."""
        self._marker_at = None if row is None else (row, col)
        with self.marker.hold_sync():
            if row is None:
                self.marker.x, self.marker.y = [], []
            else:
                self.marker.x, self.marker.y = [self._x_map.to_data(col)], [self._y_map.to_data(row)]

    def reset_zoom(self) -> None:
        """Show the whole image."""
        if self._values is None:
            return
        h, w = self._values.shape
        self._set_view(0.0, float(h), 0.0, float(w))

    # -- internals -----------------------------------------------------------------------
    def _apply_mode(self, mode: str) -> None:
        if mode == "roi":
            self.figure.interaction = self._brush
        elif mode == "pan":
            self.figure.interaction = self._panzoom
        else:
            self.figure.interaction = self._mouse

    def _apply_style(self) -> None:
        bar = self._style == "scale bar" and self._x_map.calibrated
        self.x_axis.visible = self.y_axis.visible = not bar
        if not bar:
            with self.scale_bar.hold_sync(), self.scale_bar_label.hold_sync():
                self.scale_bar.x = self.scale_bar.y = []
                self.scale_bar_label.x, self.scale_bar_label.y, self.scale_bar_label.text = [], [], []

    def _place_scale_bar(self) -> None:
        """A bar of a round length, at most :data:`.SCALE_BAR_SHARE` of the visible
        width, at the bottom left of the view."""
        if self._style != "scale bar" or not self._x_map.calibrated:
            return
        y0, y1, x0, x1 = self._visible()
        top, bottom = self._y_map.to_data(y0), self._y_map.to_data(y1)
        left, right = self._x_map.to_data(x0), self._x_map.to_data(x1)
        width = right - left
        length = nice_length(SCALE_BAR_SHARE * width)
        start, height = left + 0.05 * width, bottom - 0.06 * (bottom - top)
        with self.scale_bar.hold_sync(), self.scale_bar_label.hold_sync():
            self.scale_bar.x, self.scale_bar.y = [start, start + length], [height, height]
            self.scale_bar_label.x, self.scale_bar_label.y = [start + length / 2], [height]
            self.scale_bar_label.text = [format_length(length, self._x_map.unit)]

    def _pixel(self, domain: dict) -> Optional[tuple[int, int]]:
        if self._values is None or "x" not in domain or "y" not in domain:
            return None
        h, w = self._values.shape
        row = int(np.floor(self._y_map.to_edge(domain["y"])))
        col = int(np.floor(self._x_map.to_edge(domain["x"])))
        return (row, col) if 0 <= row < h and 0 <= col < w else None

    def _show_hover(self, content: dict) -> None:
        pixel = None if content.get("event") == "mouseleave" else self._pixel(content.get("domain", {}))
        raw = self._raw
        if pixel is None or raw is None or raw.shape != self._values.shape:
            self.hover.value = ""
            return
        value = float(raw[pixel])
        self.hover.value = readout(*pixel, value, self._y_map, self._x_map, self._value_unit)

    def _on_mouse(self, _widget, content, _buffers) -> None:
        event = content.get("event")
        if event in ("mousemove", "mouseleave"):
            self._show_hover(content)
            return
        if event not in ("click", "dragmove", "dragstart"):
            return
        if event != "click" and self.mode.value != "pick":
            return
        pixel = self._pixel(content.get("domain", {}))
        if pixel is None:
            return
        self.show_marker(pixel[0] + 0.5, pixel[1] + 0.5)
        for fn in self._pick_handlers:
            fn(*pixel)

    def _on_brush(self, change) -> None:
        if change["new"] or self._brush.selected_x is None or self._values is None:
            return
        h, w = self._values.shape
        xs = sorted(self._x_map.to_edge(v) for v in self._brush.selected_x)
        ys = sorted(self._y_map.to_edge(v) for v in self._brush.selected_y)
        c0, c1 = max(0, int(np.ceil(xs[0] - 0.5))), min(w, int(np.floor(xs[1] - 0.5)) + 1)
        r0, r1 = max(0, int(np.ceil(ys[0] - 0.5))), min(h, int(np.floor(ys[1] - 0.5)) + 1)
        if r1 <= r0 or c1 <= c0:
            return
        for fn in self._roi_handlers:
            fn(r0, r1, c0, c1)

    def _set_view(self, y0: float, y1: float, x0: float, x1: float) -> None:
        self._syncing_zoom = True
        try:
            x0, x1 = self._x_map.to_data(x0), self._x_map.to_data(x1)
            y0, y1 = self._y_map.to_data(y0), self._y_map.to_data(y1)
            with self.x_scale.hold_sync(), self.y_scale.hold_sync():
                self.x_scale.min, self.x_scale.max = x0, x1
                self.y_scale.min, self.y_scale.max = y1, y0  # rows grow downwards
        finally:
            self._syncing_zoom = False
        self._throttle.submit(False)

    def _on_zoom(self, _change) -> None:
        if not self._syncing_zoom and self._values is not None:
            self._throttle.submit(False)

    def _visible(self) -> tuple[float, float, float, float]:
        """``(y0, y1, x0, x1)`` of the view in pixel-edge coordinates."""
        ys = sorted(self._y_map.to_edge(v) for v in (self.y_scale.min, self.y_scale.max))
        xs = sorted(self._x_map.to_edge(v) for v in (self.x_scale.min, self.x_scale.max))
        return ys[0], ys[1], xs[0], xs[1]

    def _layout_for(self, shape: tuple) -> None:
        """Size the figure so the plot area keeps the image's aspect ratio."""
        h, w = shape
        scale = self.size / max(h, w)
        area_w, area_h = max(120, round(w * scale)), max(120, round(h * scale))
        margin = self.figure.fig_margin
        fig_w = area_w + margin["left"] + margin["right"]
        fig_h = area_h + margin["top"] + margin["bottom"]
        ratio = fig_w / fig_h
        with self.figure.hold_sync():
            self.figure.layout.width = f"{fig_w}px"
            self.figure.layout.height = f"{fig_h}px"
            self.figure.min_aspect_ratio = ratio
            self.figure.max_aspect_ratio = ratio

    def _send(self, reshaped: bool) -> None:
        with self._lock:
            pyramid, values = self._pyramid, self._values
        if pyramid is None:
            return
        if reshaped or self._shown_shape != pyramid.shape:
            self._shown_shape = pyramid.shape
            self._layout_for(pyramid.shape)
            h, w = pyramid.shape
            self._set_view(0.0, float(h), 0.0, float(w))
        tile: Tile = pyramid.tile(*self._visible(), budget=self.budget)
        limits = robust_limits(values) if self._auto_limits else None
        # the image leaves first, its colour limits right behind it: the browser takes
        # both before its next frame. Limits first had it render the old image under
        # the new limits (a WebGL draw and, without a GPU, a ~10 ms read-back) while
        # the image was still on its way.
        with self.color_scale.hold_sync(), self.mark.hold_sync():
            self.mark.image = tile.data
            self.mark.x = (self._x_map.to_data(tile.x0), self._x_map.to_data(tile.x1))
            self.mark.y = (self._y_map.to_data(tile.y0), self._y_map.to_data(tile.y1))
            if limits is not None:
                self.color_scale.min, self.color_scale.max = limits
        self._place_scale_bar()

    def _report(self, exc: BaseException) -> None:
        self.error = exc


def _whole_number_ticks(axis) -> None:
    """Ticks on whole scan positions, 1, 2 or 5 times a power of ten apart, at most
    :data:`MAX_AXIS_TICKS`: d3's own ticks on a small scan fall on half positions, which
    the "d" format labels twice (0 1 1 2 2 ...), and bqplot's ``num_ticks`` spaces them
    evenly, off the positions (0 1 2 4 5 6 for 6 rows)."""
    lo, hi = axis.scale.min, axis.scale.max
    if axis.tick_format != "d":  # calibrated: d3's own ticks on round lengths
        axis.tick_values = None
        return
    if lo is None or hi is None:
        return
    lo, hi = sorted((lo, hi))
    wanted = max(1.0, (hi - lo) / MAX_AXIS_TICKS)
    power = 10 ** np.floor(np.log10(wanted))
    step = next(f * power for f in (1, 2, 5, 10) if f * power >= wanted)
    axis.tick_values = np.arange(np.ceil(lo / step), np.floor(hi / step) + 1) * step
