"""Piano-roll images for the review page of a MIDI run: inline SVG, time on x (seconds), pitch on y
(MIDI number, high notes up), one rectangle per note whose colour and opacity grow with its velocity.

Several rolls of one row share a time and pitch range (:func:`roll_extent`) so they line up side by side.
A roll may carry ``context`` notes (a continuation's prompt), drawn grey under the class ``pp``.
"""

from __future__ import annotations

import dataclasses
import html

import numpy as np

from tunesmith.models.midi.notes import Notes

NOTE_CLASS = "pn"  # the class of a note's <rect> (``note`` is a page paragraph class)
CONTEXT_CLASS = "pp"  # the class of a context (prompt) note's <rect>
WIDTH, HEIGHT = 300, 150  # px of the drawing area
MARGIN_LEFT, MARGIN_BOTTOM = 28, 16


@dataclasses.dataclass(frozen=True)
class RollExtent:
    """The shared axes of a row of rolls: seconds ``[0, seconds]`` and MIDI pitches ``[low, high]``."""

    seconds: float
    low: int
    high: int


def roll_extent(parts: list[Notes]) -> RollExtent:
    """The smallest extent holding every note of ``parts`` (at least 1 s and an octave)."""
    ends = [float(p.end.max()) for p in parts if len(p)]
    pitches = np.concatenate([p.pitch.astype(np.int64) for p in parts if len(p)] or [np.zeros(0, np.int64)])
    seconds = max([1.0, *ends])
    if len(pitches):
        low, high = int(pitches.min()), int(pitches.max())
    else:
        low, high = 60, 72
    if high - low < 12:
        mid = (low + high) // 2
        low, high = mid - 6, mid + 6
    return RollExtent(seconds, max(low - 1, 0), min(high + 1, 127))


def velocity_colour(velocity: int) -> tuple[str, float]:
    """(fill colour, opacity) of a note of MIDI ``velocity`` 1..127: soft notes pale blue, loud dark red."""
    v = min(max(int(velocity), 1), 127) / 127.0
    red, green, blue = int(40 + 190 * v), int(90 - 60 * v), int(200 - 160 * v)
    return f"rgb({red},{green},{blue})", round(0.35 + 0.65 * v, 3)


def _note_rects(notes: Notes, extent: RollExtent, cls: str, velocity_known: bool) -> list[str]:
    """One ``<rect class=cls>`` per note; grey without ``velocity_known``."""
    row_h = HEIGHT / max(extent.high - extent.low + 1, 1)
    x_scale = WIDTH / extent.seconds
    rects = []
    for pitch, start, end, velocity in zip(notes.pitch, notes.start, notes.end, notes.velocity, strict=True):
        x = MARGIN_LEFT + float(start) * x_scale
        w = max((float(end) - float(start)) * x_scale, 1.0)
        y = (extent.high - int(pitch)) * row_h
        fill, opacity = velocity_colour(int(velocity)) if velocity_known else ("#888", 0.7)
        tip = f"pitch {int(pitch)}, {float(start):.2f}–{float(end):.2f} s" + (
            f", velocity {int(velocity)}" if velocity_known else ""
        )
        rects.append(
            f'<rect class="{cls}" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{max(row_h, 1.0):.1f}" '
            f'fill="{fill}" fill-opacity="{opacity}"><title>{tip}</title></rect>'
        )
    return rects


def pianoroll_svg(
    notes: Notes,
    extent: RollExtent,
    *,
    role: str,
    title: str,
    velocity_known: bool = True,
    context: Notes | None = None,
) -> str:
    """An SVG piano roll of ``notes`` (seconds from 0) on ``extent``; ``role`` names it (``prompt``,
    ``target``, ``generated``) in ``data-role``. Without ``velocity_known`` (a velocity task's prompt, which
    hides them) every note is drawn grey. ``context`` (a continuation's prompt) is drawn grey first
    (``class="pp"``, counted in ``data-context-notes``); ``data-notes`` counts ``notes`` only."""
    span = max(extent.high - extent.low + 1, 1)
    row_h = HEIGHT / span
    x_scale = WIDTH / extent.seconds
    rects = _note_rects(context, extent, CONTEXT_CLASS, False) if context is not None else []
    rects += _note_rects(notes, extent, NOTE_CLASS, velocity_known)
    grid = []
    for c in range((extent.low // 12 + 1) * 12, extent.high + 1, 12):  # C lines and labels
        y = (extent.high - c + 1) * row_h
        grid.append(
            f'<line x1="{MARGIN_LEFT}" y1="{y:.1f}" x2="{MARGIN_LEFT + WIDTH}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text x="2" y="{y:.1f}" font-size="9" fill="#777">C{c // 12 - 1}</text>'
        )
    step = 1.0 if extent.seconds <= 10 else 5.0 if extent.seconds <= 60 else 30.0
    for t in np.arange(0.0, extent.seconds + 1e-9, step):
        x = MARGIN_LEFT + float(t) * x_scale
        grid.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{HEIGHT}" stroke="#eee"/>'
            f'<text x="{x:.1f}" y="{HEIGHT + 12}" font-size="9" fill="#777" text-anchor="middle">{t:g}s</text>'
        )
    total_w, total_h = MARGIN_LEFT + WIDTH + 10, HEIGHT + MARGIN_BOTTOM
    context_attr = f' data-context-notes="{len(context)}"' if context is not None else ""
    return (
        f'<svg class="pianoroll" data-role="{html.escape(role)}" data-notes="{len(notes)}"{context_attr} '
        f'xmlns="http://www.w3.org/2000/svg" width="{total_w}" height="{total_h}" '
        f'viewBox="0 0 {total_w} {total_h}" role="img" aria-label="{html.escape(title)}">'
        f"<title>{html.escape(title)}</title>"
        f'<rect x="{MARGIN_LEFT}" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#fafafa" stroke="#ccc"/>'
        f"{''.join(grid)}{''.join(rects)}</svg>"
    )
