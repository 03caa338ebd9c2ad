"""The drawing page. Everything it needs is served from static/: no CDN, works offline."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

from emnist import canvas

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return render_template(
        "index.html",
        default_model=current_app.config["DEFAULT_MODEL"],
        canvas_size=canvas.CANVAS_SIZE,
        brush_ratio=canvas.BRUSH_RATIO,
        feedback=current_app.config["FEEDBACK"],
    )
