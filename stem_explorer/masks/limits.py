"""Bounds on what a mask description may ask for.

Mask descriptions arrive from notebooks, the command line, results files and JSON
text, so every number in them is bounded before anything is built or rasterised. The
JSON Schema (``schema.json``) states the same bounds (a test ties the two); the mask
classes check them on construction, :func:`stem_explorer.masks.from_dict` checks the
nesting before validating, and rasterisation checks :data:`MAX_PIXEL_TESTS` before it
evaluates a single pixel.
"""

from __future__ import annotations

#: Largest magnitude of a coordinate or size, in pixels. Detectors and scans are at
#: most tens of thousands of pixels wide; squared distances of such numbers stay exact
#: in float64 (a radius of 1e155 overflowed squaring it).
MAX_EXTENT = 1e6

#: Largest magnitude of a mask value (a Scaled factor, a Weighted weight, or their
#: products through nested masks). Masks are float32 and the dense mask product sums
#: in float32 (largest 3.4e38): 1e20 times the counts of a whole frame of a 32-bit
#: detector (below 3e17) still fits.
MAX_WEIGHT = 1e20

#: Smallest magnitude of a non-zero Scaled factor (and of the largest value of the
#: mask it scales): smaller ones vanish in float32 and leave a mask of zeros.
MIN_WEIGHT = 1e-20

#: Most primitive shapes in one mask (Union parts, SymmetricSpots disks, all nested
#: shapes together): each is rasterised on its own (about 0.2 ms each).
MAX_SHAPES = 4096

#: Most vertices of one Polygon: its raster costs a pass per edge.
MAX_VERTICES = 4096

#: Deepest nesting of combined masks (Union, Difference, Scaled), so descriptions can
#: be walked recursively without reaching Python's recursion limit.
MAX_DEPTH = 32

#: Most pixel tests one rasterisation (a mask, or a stack of masks) may cost: the sum
#: over shapes of the pixels in their windows, times the edges of a polygon. At about
#: 10 ns a test that is 20 s, and it also bounds the non-zeros of a mask stack.
MAX_PIXEL_TESTS = 2**31
