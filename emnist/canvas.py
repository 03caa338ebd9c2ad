"""The drawing canvas the models are served for: one source for the page and the evaluations.

The web page exports a CANVAS_SIZE x CANVAS_SIZE opaque PNG (black round-capped strokes on
white) whatever the screen's size or pixel ratio, drawn with a pen BRUSH_RATIO of the canvas
side wide. The page gets both values from the template (`webapp/pages.py`); the Hershey-font
drawings (`evaluation/stroke_drawings.py`) and canvas-like renderings use the same numbers, so an
evaluation draws with the pen people draw with.
"""

from __future__ import annotations

CANVAS_SIZE = 280
BRUSH_RATIO = 1 / 18


def brush_px(canvas_size: int = CANVAS_SIZE) -> float:
    """The page's pen width in pixels of the exported canvas."""
    return canvas_size * BRUSH_RATIO
