"""SynthAU face renderer: determinism, localised and monotone AU effects, nuisance, validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from au_lightning.data.synth.face import (
    SYNTH_AUS,
    Nuisance,
    SubjectLook,
    render_face,
    sample_look,
)

SIZE = 112
# seeds 0-5: a beard, a fringe, glasses, a full beard, dark skin with a fringe, dark skin with
# glasses; the occluders hide some AU evidence, so every assertion must hold through them
SEEDS = range(6)
UPPER_AUS = (1, 2, 4, 5, 6, 7)
LOWER_AUS = (10, 12, 14, 15, 17, 20, 23, 24, 25, 26)


@pytest.fixture(scope="module")
def looks() -> list[SubjectLook]:
    return [sample_look(np.random.default_rng(seed)) for seed in SEEDS]


def _render(look: SubjectLook, aus: dict[int, float] | None = None, **nuisance) -> np.ndarray:
    return render_face(look, aus or {}, Nuisance(**nuisance), SIZE).astype(np.int16)


def _bands(look: SubjectLook) -> dict[str, tuple[slice, slice]]:
    """Rows of the face box (hairline t=0 .. chin t=1): eyes and above, nose, mouth and chin."""
    top, height = (0.5 - look.face_height / 2) * SIZE, look.face_height * SIZE
    cols = slice(int((0.5 - look.face_width / 2) * SIZE), int((0.5 + look.face_width / 2) * SIZE))

    def row(t: float) -> int:
        return min(SIZE, round(top + t * height))

    return {
        "upper": (slice(row(0.0), row(0.5)), cols),
        "middle": (slice(row(0.5), row(0.66)), cols),
        "lower": (slice(row(0.66), row(1.08)), cols),
    }


def _changed(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels whose largest channel difference exceeds 8 grey levels."""
    return int((np.abs(a - b).max(axis=2) > 8).sum())


def test_shape_dtype_and_size():
    look = sample_look(np.random.default_rng(0))
    image = render_face(look, {12: 2.5})
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert render_face(look, {}, size=64).shape == (64, 64, 3)
    assert image.std() > 20  # a face on a background, not a flat image


def test_determinism_and_noise_seed():
    look = sample_look(np.random.default_rng(1))
    noisy = Nuisance(rotation=3, noise=5, blur=0.6, light_strength=0.3, light_angle=1.0)
    a = render_face(look, {1: 2, 12: 4}, noisy, rng=np.random.default_rng(7))
    b = render_face(look, {1: 2, 12: 4}, noisy, rng=np.random.default_rng(7))
    c = render_face(look, {1: 2, 12: 4}, noisy, rng=np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a.astype(int) - c).mean() > 2  # the noise differs, std 5 in each image
    clean = Nuisance(rotation=3, blur=0.6)
    assert np.array_equal(render_face(look, {4: 3}, clean), render_face(look, {4: 3}, clean))


@pytest.mark.parametrize("au", SYNTH_AUS)
def test_every_au_changes_pixels_monotonically(looks, au):
    for look in looks:
        base = _render(look)
        d3 = np.abs(_render(look, {au: 3}) - base).mean()
        d5 = np.abs(_render(look, {au: 5}) - base).mean()
        assert d5 > 0, f"AU{au} at 5 leaves {look} unchanged"
        assert d3 < d5, f"AU{au}: change at 3 ({d3:.3f}) not below change at 5 ({d5:.3f})"
        assert np.abs(_render(look, {au: 0.0}) - base).max() == 0  # intensity 0 = absent


@pytest.mark.parametrize("au", UPPER_AUS + LOWER_AUS + (9,))
def test_au_change_is_in_the_right_region(looks, au):
    for look in looks:
        diff = np.abs(_render(look, {au: 5}) - _render(look))
        band = {name: diff[box].mean() for name, box in _bands(look).items()}
        if au in UPPER_AUS:
            assert band["upper"] > 2 * band["lower"], (au, band)
        elif au in LOWER_AUS:
            assert band["lower"] > 2 * band["upper"], (au, band)
        else:  # AU9: nose wrinkles and nostril wings, with a slight inner brow lowering
            assert band["middle"] > band["upper"] and band["middle"] > band["lower"], band


def test_subtle_aus_change_fewer_pixels_than_clear_ones(looks):
    # Mean changed pixels (of 12544) at intensity 3 over the six subjects, measured:
    # AU7 85, AU14 44, AU23 71, AU24 89 vs AU12 139, AU26 749.
    counts = {
        au: np.mean([_changed(_render(lk, {au: 3}), _render(lk)) for lk in looks])
        for au in (7, 14, 23, 24, 12, 26)
    }
    assert max(counts[au] for au in (7, 14, 23, 24)) < min(counts[12], counts[26]), counts
    assert all(counts[au] > 10 for au in (7, 14, 23, 24)), counts  # subtle, but there


@pytest.mark.parametrize(
    "field",
    [
        {"rotation": 4.0},
        {"dx": 0.02},
        {"dy": -0.02},
        {"scale": 1.04},
        {"yaw": 0.15},
        {"pitch": 0.15},
        {"light_strength": 0.3, "light_angle": 2.0},
        {"blur": 1.0},
    ],
)
def test_nuisance_changes_pixels(looks, field):
    look = looks[2]
    # a few degrees of roll or a 2% shift moves far more pixels than a subtle AU does
    assert _changed(_render(look, **field), _render(look)) > 300


def _eye_boxes(look: SubjectLook) -> list[tuple[slice, np.ndarray]]:
    half_eye = look.eye_size * look.face_width / 2 * SIZE
    ey = (0.5 - look.face_height / 2 + look.eye_y * look.face_height) * SIZE
    rows = slice(round(ey - half_eye), round(ey + half_eye) + 1)
    boxes = []
    for side in (-1, 1):
        ex = (0.5 + side * look.eye_spacing * look.face_width / 2) * SIZE
        boxes.append((rows, np.arange(round(ex - 1.2 * half_eye), round(ex + 1.2 * half_eye) + 1)))
    return boxes


def test_gaze_moves_the_irises(looks):
    for look in looks:
        left, right = _render(look, gaze=-1.0), _render(look, gaze=1.0)
        darker = right.mean(axis=2) - left.mean(axis=2)  # < 0 where the iris arrived
        for rows, cols in _eye_boxes(look):
            box = darker[rows][:, cols]
            arrived = (np.nonzero(box < -20)[1]).mean()
            left_from = (np.nonzero(box > 20)[1]).mean()
            assert arrived - left_from > 2.0, (arrived, left_from)  # the iris moved right
        outside = np.abs(left - right)
        for rows, cols in _eye_boxes(look):
            outside[rows, cols.min() : cols.max() + 1] = 0
        assert outside.max() == 0  # and nothing but the eyes changed


def test_hand_covers_the_mouth(looks):
    for look in looks:
        rows = _bands(look)["lower"][0]
        half_mouth = 0.6 * look.mouth_width * look.face_width * SIZE
        box = (rows, slice(round(SIZE / 2 - half_mouth), round(SIZE / 2 + half_mouth)))
        open_mouth = {25: 5, 26: 5}
        visible = np.abs(_render(look, open_mouth) - _render(look))[box].mean()
        covered = np.abs(_render(look, open_mouth, hand=1.0) - _render(look, hand=1.0))[box].mean()
        assert covered < 0.25 * visible, (covered, visible)
        assert _changed(_render(look, hand=1.0), _render(look)) > 600  # skin on skin: ~1000-2500


@pytest.mark.parametrize(
    ("aus", "message"),
    [
        ({3: 1.0}, "AU3"),
        ({12: 7.0}, "AU12 intensity 7"),
        ({12: -0.5}, "AU12 intensity -0.5"),
        ({4: float("nan")}, "AU4 intensity nan"),
    ],
)
def test_invalid_intensities_raise(aus, message):
    look = sample_look(np.random.default_rng(0))
    with pytest.raises(ValueError, match=message):
        render_face(look, aus)


def test_noise_needs_an_rng():
    look = sample_look(np.random.default_rng(0))
    with pytest.raises(ValueError, match="rng"):
        render_face(look, {}, Nuisance(noise=3.0))


def test_sample_look_varies_subjects():
    looks = [sample_look(np.random.default_rng(seed)) for seed in range(50)]
    glasses = sum(lk.glasses for lk in looks)
    fringe = sum(lk.fringe > 0 for lk in looks)
    beard = sum(lk.beard > 0 for lk in looks)
    assert 4 <= glasses <= 25 and 4 <= fringe <= 25 and 3 <= beard <= 22, (glasses, fringe, beard)
    assert len({lk.skin for lk in looks}) == 50 and len({lk.hair for lk in looks}) > 40
    widths = [lk.face_width for lk in looks]
    assert min(widths) >= 0.62 and max(widths) <= 0.72 and np.std(widths) > 0.02
    lum = [sum(lk.skin) / 3 for lk in looks]
    assert max(lum) - min(lum) > 100  # light to dark skin
    # different people give clearly different neutral images
    a, b = (render_face(lk, {}).astype(int) for lk in looks[:2])
    assert np.abs(a - b).mean() > 10


def test_look_fields_are_frozen_and_minimal_construction_works():
    look = sample_look(np.random.default_rng(3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        look.glasses = True  # type: ignore[misc]
    minimal = SubjectLook(
        face_width=0.66,
        face_height=0.85,
        eye_spacing=0.44,
        eye_size=0.2,
        brow_height=0.09,
        brow_thickness=0.025,
        nose_length=0.22,
        nose_width=0.24,
        mouth_width=0.35,
        lip_thickness=0.03,
        skin=(220, 180, 150),
        hair=(60, 40, 30),
        iris=(80, 50, 30),
    )
    assert render_face(minimal, {12: 5}).shape == (SIZE, SIZE, 3)
