"""Write docs/images/synthau.png: every SynthAU action unit on three subjects at 0, 3 and 5.

    python docs/make_contact_sheet.py

Rows are the 17 AUs of ``SYNTH_AUS``; columns are three subjects (a plain face, one with
glasses, one with darker skin and a beard) at intensity 0, 3 and 5, without noise, light or
head motion so that each AU's appearance change is what differs along a row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from au_lightning.data.synth.face import SYNTH_AUS, SubjectLook, render_face, sample_look

NAMES = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    17: "chin raiser",
    20: "lip stretcher",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
}
CELL = 104
LABEL_W = 128
HEAD_H = 30
LEVELS = (0.0, 3.0, 5.0)
OUT = Path(__file__).resolve().parent / "images" / "synthau.png"


def pick_subjects() -> list[SubjectLook]:
    """The first seeds giving a plain face, a face with glasses, a darker bearded face."""
    wanted = [
        lambda lk: not lk.glasses and not lk.fringe and not lk.beard and sum(lk.skin) > 540,
        lambda lk: lk.glasses and not lk.fringe and not lk.beard,
        lambda lk: lk.beard > 0.5 and not lk.glasses and sum(lk.skin) < 420,
    ]
    looks = []
    for test in wanted:
        seed = 0
        while not test(look := sample_look(np.random.default_rng(seed))):
            seed += 1
        looks.append(look)
    return looks


def main() -> None:
    looks = pick_subjects()
    n_cols = len(looks) * len(LEVELS)
    sheet = Image.new("RGB", (LABEL_W + n_cols * CELL, HEAD_H + len(SYNTH_AUS) * CELL), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for j in range(n_cols):
        subject, level = divmod(j, len(LEVELS))
        text = f"subject {subject + 1}\nintensity {LEVELS[level]:.0f}"
        draw.multiline_text((LABEL_W + j * CELL + 8, 2), text, fill="black", font=font)
    for i, au in enumerate(SYNTH_AUS):
        y = HEAD_H + i * CELL
        label = f"AU{au}\n{NAMES[au]}"
        draw.multiline_text((6, y + CELL // 2 - 12), label, fill="black", font=font)
        for j in range(n_cols):
            subject, level = divmod(j, len(LEVELS))
            face = render_face(looks[subject], {au: LEVELS[level]}, size=CELL)
            sheet.paste(Image.fromarray(face), (LABEL_W + j * CELL, y))
    for k in range(1, len(looks)):
        x = LABEL_W + k * len(LEVELS) * CELL
        draw.line([(x, 0), (x, sheet.height)], fill="black", width=2)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
