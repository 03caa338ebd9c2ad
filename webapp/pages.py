"""The drawing page. Everything it needs is served from static/: no CDN, works offline."""

from __future__ import annotations

from flask import Blueprint, current_app, render_template

bp = Blueprint("pages", __name__)


@bp.get("/")
def index():
    return render_template("index.html", default_model=current_app.config["DEFAULT_MODEL"])
