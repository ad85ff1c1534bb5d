"""A clevr caption checked against its image by drawing it: true captions hold, misreadings do not."""

import random

from clevr_data import needs_data
from vrm.tasks.clevr import ClevrTask
from vrm.tasks.clevr.consistency import consistency, grounded
from vrm.tasks.clevr.data import load_data
from vrm.tasks.clevr.grounding import object_fits

COLOURS = ("gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow")
OTHER_SHAPE = {"cube": "sphere", "sphere": "cylinder", "cylinder": "cube"}


def objects(sample) -> list[tuple]:
    """The scene's objects as a true ``xy`` caption names and places them."""
    return [(o["size"], o["color"], o["material"], o["shape"], *o["pixel_coords"][:2])
            for o in sample.trace["scene"]["objects"]]


@needs_data
def test_true_captions_hold_even_a_pixel_off():
    task, rng = ClevrTask(place="xy"), random.Random(0)
    for seed in range(40):
        s = task.sample(seed)
        assert object_fits(s.image, objects(s)) == ([True] * len(objects(s)), True), seed
        moved = [(*o[:4], o[4] + rng.choice((-1, 0, 1)), o[5] + rng.choice((-1, 0, 1))) for o in objects(s)]
        assert object_fits(s.image, moved)[0] == [True] * len(moved), (seed, moved)


@needs_data
def test_each_misreading_fails_its_object():
    task, rng, caught = ClevrTask(place="xy"), random.Random(1), {}
    for seed in range(40):
        s = task.sample(seed)
        true = objects(s)
        k = rng.randrange(len(true))
        size, colour, material, shape, x, y = true[k]
        wrong = {
            "size": ("small" if size == "large" else "large", colour, material, shape, x, y),
            "colour": (size, rng.choice([c for c in COLOURS if c != colour]), material, shape, x, y),
            "shape": (size, colour, material, OTHER_SHAPE[shape], x, y),
            "place": (size, colour, material, shape, x + 4, y),
        }
        for kind, obj in wrong.items():
            fits, covered = object_fits(s.image, true[:k] + [obj] + true[k + 1:])
            caught.setdefault(kind, []).append(not fits[k])
            assert fits[:k] + fits[k + 1:] == [True] * (len(true) - 1), (seed, kind)  # the others still hold
        assert object_fits(s.image, true[:k] + true[k + 1:])[1] is False, seed  # an object left out
    assert all(caught["size"]) and all(caught["shape"]), caught
    assert sum(caught["colour"]) >= 36 and sum(caught["place"]) >= 36, caught  # similar colours may pass


@needs_data
def test_the_grounded_reward_sees_a_misread_caption_the_text_cannot():
    task = ClevrTask(reasoning="checks", place="xy")
    s = task.sample(3)
    caption, first = task.caption(s), s.trace["scene"]["objects"][0]
    rgb = load_data().colors
    far = max(rgb, key=lambda c: sum(abs(a - b) for a, b in zip(rgb[c], rgb[first["color"]])))  # unmistakable
    name = f"{first['size']} {first['color']} {first['material']} {first['shape']}"
    misread = caption.replace(name, name.replace(first["color"], far), 1)
    assert misread != caption
    assert grounded(s, f"<CAPTION>{caption}</CAPTION>") == 1.0
    assert consistency(s, f"<CAPTION>{misread}</CAPTION>") == 1.0  # text alone: the count is all it can check
    n = len(s.trace["scene"]["objects"])
    assert grounded(s, f"<CAPTION>{misread}</CAPTION>") == (n + 1) / (n + 2)  # the count, n objects, none left out
