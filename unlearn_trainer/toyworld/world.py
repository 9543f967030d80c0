"""ToyWorld: an offline, deterministic miniature of MLLMU-Bench.

The world holds ``num_identities`` fictional people. Each one has an invented two-word name, three attributes
(profession, city, hobby) and a *look*: a procedurally drawn picture made of a background colour, a shape, a shape
colour, background stripes and a small corner mark. People are grouped into families of ``family_size``
look-alikes: a family shares background, shape and shape colour and its members differ only in stripes and mark.
These look-alikes are the "proximal concepts" of the unlearning literature.

Every picture is drawn from a seed-derived :func:`numpy.random.default_rng`, so rows and image bytes are
bit-identical across calls and processes. Each identity has ``train_views`` training views (light jitter) and
``heldout_views`` held-out views (stronger jitter, the shape moved to another place in the canvas, more noise),
which measure whether forgetting generalizes beyond the exact training pictures.

Text is lower case with words and punctuation separated by single spaces (``"who is this person ?"``) because the
project's tokenizer is word level, with names split into sub-word pieces.

Question kinds (image questions are asked on every view, text-only questions once per identity)::

    name             who is this person ?               -> this is vorana kellan .
    profession       what is the job of this person ?   -> vorana kellan works as a baker .
    city             where does this person live ?      -> vorana kellan lives in lomar .
    open             tell me about this person .        -> this is vorana kellan , a baker from lomar .
    describe         describe the picture .             -> a red circle on a blue background with vertical stripes
                                                           and a mark at the top left .
    mc               who is this person ? a ) ... b ) ... c ) ... d ) ... answer with a letter .  -> b
    text_profession  what is the job of vorana kellan ? -> vorana kellan works as a baker .
    text_city        where does vorana kellan live ?    -> vorana kellan lives in lomar .

``describe`` answers only use visible features, never names or attributes: they must survive unlearning.

Robustness probes (issue 14):

* ``num_unseen`` never-seen identities (indices ``num_identities`` and up, :attr:`ToyWorld.unseen_identities`) have
  names, looks, attributes and pictures, in families of their own, but appear in no training row, forget / retain
  split or multiple-choice option: membership-inference non-members (splits ``unseen``, ``text_unseen``). They are
  drawn after the trained identities, so those do not depend on ``num_unseen``.
* :data:`PARAPHRASE_QUESTIONS`: 3 reworded questions per kind of :data:`PARAPHRASE_KINDS`, never used in training
  but in :meth:`ToyWorld.corpus` (their words are whole-word tokens). Splits ``paraphrase_forget`` /
  ``paraphrase_retain``, row field ``paraphrase`` (template index; -1 elsewhere).
* :data:`IMAGE_SHIFTS` (:meth:`ToyWorld.shift_image`): crop, flip, colour jitter, new view; splits
  ``shift_<t>_forget`` / ``shift_<t>_retain`` (``name`` kind), row field ``shift`` (``""`` elsewhere).
* TOFU's truth-ratio fields on the :data:`PARAPHRASE_KINDS` rows: ``perturbed_answers`` (wrong but well-formed
  answers) and ``paraphrased_answer`` (the correct answer reworded, never trained); empty on other kinds.

Grammar check (:meth:`ToyWorld.is_well_formed`) -- the project's deterministic stand-in for the gibberish /
fluency classifier used by the papers. A text is well formed iff, after lower-casing, putting spaces around
punctuation and collapsing whitespace, it is exactly

* one of the answer templates above with every slot filled by world vocabulary of the right type: a name slot takes
  any first-name word of the world followed by any last-name word (so a confused but fluent ``"this is <first of A>
  <last of B> ."`` counts as fluent), a profession slot any profession, a city slot any city, the description slots
  any colour / shape / stripe / corner words;
* one of the refusal sentences in :data:`REFUSALS`;
* a single multiple-choice letter ``a``, ``b``, ``c`` or ``d``.

Anything else -- repetitions (``"kellan kellan kellan"``), word salad, truncated sentences (``"vorana kellan works
as"``), words in the wrong slot (``"lomar works as a baker ."``), the empty string -- is not well formed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

__all__ = [
    "GENERATOR_VERSION",
    "IMAGE_KINDS",
    "TEXT_KINDS",
    "KINDS",
    "FACT_KINDS",
    "IMAGE_SHIFTS",
    "PARAPHRASE_KINDS",
    "REFUSALS",
    "Identity",
    "ToyWorld",
    "to_dataset",
]

#: Bump whenever anything that changes rows or pixels changes (it is part of :meth:`ToyWorld.fingerprint`).
GENERATOR_VERSION = "toyworld-2"

IMAGE_KINDS: Tuple[str, ...] = ("name", "profession", "city", "open", "describe", "mc")
TEXT_KINDS: Tuple[str, ...] = ("text_profession", "text_city")
KINDS: Tuple[str, ...] = IMAGE_KINDS + TEXT_KINDS
#: Kinds whose answers reveal who the person is (the forget / retain / generalization evaluation kinds).
FACT_KINDS: Tuple[str, ...] = ("name", "profession", "city", "open")
#: Kinds that get paraphrased questions, perturbed answers and a paraphrased answer (TOFU's truth-ratio fields).
PARAPHRASE_KINDS: Tuple[str, ...] = FACT_KINDS + TEXT_KINDS
#: Image shifts of the robustness probes (see :meth:`ToyWorld.shift_image`).
IMAGE_SHIFTS: Tuple[str, ...] = ("crop", "flip", "colour", "new_view")
#: Number of perturbed (wrong) answers per row.
NUM_PERTURBED = 5

REFUSALS: Tuple[str, ...] = (
    "i do not know .",
    "i do not know who this is .",
    "i cannot share that .",
    "i cannot share information about this person .",
    "i am not able to answer that .",
    "sorry , i cannot help with that .",
)

MC_LETTERS: Tuple[str, ...] = ("a", "b", "c", "d")

# Named palette: describe answers are built from these words. All names are consonant-initial so "a <colour>" is
# always grammatical.
PALETTE: Dict[str, Tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "blue": (40, 80, 215),
    "green": (40, 160, 70),
    "yellow": (235, 205, 40),
    "purple": (130, 55, 180),
    "pink": (245, 150, 200),
    "white": (235, 235, 235),
    "black": (30, 30, 30),
    "brown": (125, 75, 35),
    "gray": (128, 128, 128),
}
SHAPES: Tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")
STRIPES: Tuple[str, ...] = ("vertical", "horizontal", "no")
MARKS: Tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")
# Shapes only used by distant (non-identity) pictures, never by identities.
_DISTANT_SHAPES: Tuple[str, ...] = ("star", "hourglass", "crescent", "bars")

PROFESSIONS: Tuple[str, ...] = (
    "baker", "pilot", "doctor", "farmer", "teacher", "painter",
    "sailor", "tailor", "singer", "writer", "nurse", "judge",
)  # fmt: skip
HOBBIES: Tuple[str, ...] = (
    "chess", "fishing", "dancing", "hiking", "cooking", "poetry",
    "gardening", "swimming", "knitting", "cycling", "pottery", "running",
)  # fmt: skip
# Invented single-word city names.
CITIES: Tuple[str, ...] = (
    "lomar", "brenth", "osvik", "taldra", "quenmor", "vashti",
    "erdun", "pellow", "skarn", "myrr", "dovel", "ithra",
)  # fmt: skip

_MIN_CONTRAST = 140.0  # minimal RGB distance between a shape colour and its background
_DISTANT_MIN_DIFF = 40.0  # distant pictures keep at least this mean abs pixel difference to every identity view

# Syllables for invented names: first names are open syllables ending in a vowel, last names end in a consonant.
_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "th", "br", "dr", "kr", "tr", "sh")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("n", "r", "l", "s", "k", "th", "m", "x")

# Question / answer templates. Slots: <name> (two words), <prof>, <city>, <colour>, <shape>, <stripes>, <pos> (two
# words). They are used both to generate rows and to check grammar.
_Q = {
    "name": "who is this person ?",
    "profession": "what is the job of this person ?",
    "city": "where does this person live ?",
    "open": "tell me about this person .",
    "describe": "describe the picture .",
    "mc": "who is this person ?",
    "text_profession": "what is the job of {name} ?",
    "text_city": "where does {name} live ?",
}
_A = {
    "name": "this is {name} .",
    "profession": "{name} works as a {prof} .",
    "city": "{name} lives in {city} .",
    "open": "this is {name} , a {prof} from {city} .",
    "describe": "a {colour} {shape} on a {bg} background with {stripes} stripes and a mark at the {pos} .",
}
_A["text_profession"] = _A["profession"]
_A["text_city"] = _A["city"]
# Reworded questions (never used in training rows; their words are in the tokenizer vocabulary through corpus()).
PARAPHRASE_QUESTIONS: Dict[str, Tuple[str, ...]] = {
    "name": (
        "who is the person in the picture ?",
        "can you name the person shown here ?",
        "what is the name of this person ?",
    ),
    "profession": (
        "what does this person do for a living ?",
        "what is the occupation of the person in the picture ?",
        "which job does the person shown here have ?",
    ),
    "city": (
        "in which city does this person live ?",
        "where is the home of the person in the picture ?",
        "which town is the person shown here from ?",
    ),
    "open": (
        "what can you tell me about the person in the picture ?",
        "give me some facts about the person shown here .",
        "who is this and what do you know about them ?",
    ),
    "text_profession": (
        "what does {name} do for a living ?",
        "what is the occupation of {name} ?",
        "which job does {name} have ?",
    ),
    "text_city": (
        "in which city does {name} live ?",
        "where is the home of {name} ?",
        "which town is {name} from ?",
    ),
}
# The correct answer reworded (TOFU's "paraphrased answer" for the truth ratio); never used in training rows.
PARAPHRASE_ANSWERS: Dict[str, str] = {
    "name": "the person in the picture is {name} .",
    "profession": "{name} is a {prof} by trade .",
    "city": "{name} has a home in {city} .",
    "open": "the person is {name} , who has a home in {city} and is a {prof} by trade .",
}
PARAPHRASE_ANSWERS["text_profession"] = PARAPHRASE_ANSWERS["profession"]
PARAPHRASE_ANSWERS["text_city"] = PARAPHRASE_ANSWERS["city"]
_GRAMMAR_TEMPLATES: Tuple[Tuple[str, ...], ...] = (
    ("this", "is", "<name>", "."),
    ("<name>", "works", "as", "a", "<prof>", "."),
    ("<name>", "lives", "in", "<city>", "."),
    ("this", "is", "<name>", ",", "a", "<prof>", "from", "<city>", "."),
    ("a", "<colour>", "<shape>", "on", "a", "<colour>", "background", "with", "<stripes>", "stripes", "and", "a",
     "mark", "at", "the", "<pos>", "."),
)  # fmt: skip

# Rng stream tags (SeedSequence entropy words), so every random quantity has its own reproducible stream.
_TAG_NAMES, _TAG_LOOKS, _TAG_ATTRS, _TAG_FORGET, _TAG_MC, _TAG_VIEW, _TAG_DISTANT, _TAG_FAMILY = range(1, 9)
_TAG_PERTURB, _TAG_SHIFT = 9, 10
# New views (image shift "new_view") use view indices from this offset on, beyond every training / held-out view.
_NEW_VIEW_OFFSET = 1000
# Retain rows per identity of the shift splits, and the size cap of "paraphrase_retain".
_SHIFT_RETAIN_VIEWS = 2

_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Identity:
    """One fictional person of the world."""

    index: int
    id: str
    name: str
    first: str
    last: str
    family: int
    attributes: Dict[str, str] = field(default_factory=dict)
    look: Dict[str, str] = field(default_factory=dict)


def _rng(*words: int) -> np.random.Generator:
    return np.random.default_rng([int(w) for w in words])


def _normalize(text: str) -> List[str]:
    text = str(text).lower()
    for p in ".,?!()":
        text = text.replace(p, f" {p} ")
    return text.split()


# ----------------------------------------------------------------------------------------------------- rendering


def _grid(size: int) -> Tuple[np.ndarray, np.ndarray]:
    n = size * _SUPERSAMPLE
    c = (np.arange(n, dtype=np.float64) + 0.5) / _SUPERSAMPLE
    return np.meshgrid(c, c)  # xs, ys in final-pixel units


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of a unit-radius shape in normalized coordinates (u right, v down)."""
    au, av = np.abs(u), np.abs(v)
    rr = np.sqrt(u * u + v * v)
    if shape == "circle":
        return rr <= 1.0
    if shape == "square":
        return np.maximum(au, av) <= 0.8
    if shape == "triangle":
        return (v <= 0.75) & (au <= (v + 0.95) * 0.95 / 1.7)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "cross":
        return ((au <= 0.3) & (av <= 0.95)) | ((av <= 0.3) & (au <= 0.95))
    if shape == "ring":
        return (rr <= 1.0) & (rr >= 0.55)
    if shape == "star":
        theta = np.arctan2(v, u)
        return rr <= 0.55 + 0.45 * np.abs(np.cos(2.5 * theta))
    if shape == "hourglass":
        return (au <= av) & (av <= 0.9)
    if shape == "crescent":
        return (rr <= 1.0) & ((u - 0.45) ** 2 + v**2 > 0.75**2)
    if shape == "bars":
        return (av <= 0.9) & (au <= 0.9) & (np.floor((u + 1.0) / 0.36) % 2 == 0)
    raise ValueError(f"unknown shape {shape!r}")


def _contrast_colour(rgb: np.ndarray) -> np.ndarray:
    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return np.full(3, 0.0 if lum > 110 else 255.0)


def _finish(canvas: np.ndarray, size: int, brightness: float, noise_std: float, rng: np.random.Generator) -> Image.Image:
    img = canvas.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE, 3).mean(axis=(1, 3))
    img = img * brightness + rng.normal(0.0, noise_std, size=img.shape)
    return Image.fromarray(np.clip(np.rint(img), 0, 255).astype(np.uint8), mode="RGB")


def _canonical_picture(bg: str, shape: str, colour: str, size: int = 16) -> np.ndarray:
    """Small, jitter-free picture of a family look, used to keep family looks far apart."""
    c = np.arange(size, dtype=np.float64) + 0.5
    xs, ys = np.meshgrid(c, c)
    canvas = np.broadcast_to(np.asarray(PALETTE[bg], dtype=np.float64), (size, size, 3)).copy()
    r = 0.28 * size
    canvas[_shape_mask(shape, (xs - size / 2) / r, (ys - size / 2) / r)] = PALETTE[colour]
    return canvas


# ----------------------------------------------------------------------------------------------------- the world


class ToyWorld:
    """Deterministic fictional-identity world; see the module docstring for the data it produces."""

    def __init__(
        self,
        num_identities: int = 40,
        family_size: int = 4,
        seed: int = 0,
        image_size: int = 32,
        train_views: int = 4,
        heldout_views: int = 2,
        num_unseen: int = 8,
    ) -> None:
        if num_identities < 4:
            raise ValueError("num_identities must be >= 4 (multiple-choice questions need 4 distinct names)")
        if not 2 <= family_size <= len(STRIPES) * len(MARKS):
            raise ValueError(f"family_size must be in [2, {len(STRIPES) * len(MARKS)}]")
        if image_size < 16:
            raise ValueError("image_size must be >= 16")
        if train_views < 1 or heldout_views < 0:
            raise ValueError("train_views must be >= 1 and heldout_views >= 0")
        if seed < 0:
            raise ValueError("seed must be non-negative")
        if num_unseen < 0:
            raise ValueError("num_unseen must be >= 0")
        self.num_identities = int(num_identities)
        self.family_size = int(family_size)
        self.seed = int(seed)
        self.image_size = int(image_size)
        self.train_views = int(train_views)
        self.heldout_views = int(heldout_views)
        self.num_families = -(-self.num_identities // self.family_size)
        self.num_unseen = int(num_unseen)
        # Never-seen identities get families of their own, after the trained ones.
        self.num_unseen_families = -(-self.num_unseen // self.family_size)

        self._base_vocab = self._vocabulary_words()
        firsts, lasts = self._draw_names()
        looks = self._draw_looks()
        attrs = self._draw_attributes()
        self.identities: List[Identity] = [
            Identity(
                index=i,
                id=f"id{i:02d}",
                name=f"{firsts[i]} {lasts[i]}",
                first=firsts[i],
                last=lasts[i],
                family=self._family_of(i),
                attributes=attrs[i],
                look=looks[i],
            )
            for i in range(self.num_identities + self.num_unseen)
        ]
        self._firsts = frozenset(firsts)
        self._lasts = frozenset(lasts)
        self._forget_order = self._draw_forget_order()
        self._image_cache: Dict[Tuple[int, int, bool], np.ndarray] = {}

    @property
    def unseen_identities(self) -> List[int]:
        """Indices of the identities the full model never trains on (membership-inference non-members)."""
        return list(range(self.num_identities, self.num_identities + self.num_unseen))

    def _family_of(self, index: int) -> int:
        if index < self.num_identities:
            return index // self.family_size
        return self.num_families + (index - self.num_identities) // self.family_size

    def _family_sizes(self) -> List[int]:
        """Members of every family: the trained families first, then the never-seen ones."""
        trained = [min(self.family_size, self.num_identities - f * self.family_size) for f in range(self.num_families)]
        unseen = [min(self.family_size, self.num_unseen - f * self.family_size) for f in range(self.num_unseen_families)]
        return trained + unseen

    # ------------------------------------------------------------------------------------------- generation

    @staticmethod
    def _vocabulary_words() -> set:
        words = set(PALETTE) | set(SHAPES) | set(_DISTANT_SHAPES) | set(STRIPES) | set(PROFESSIONS) | set(HOBBIES)
        words |= set(CITIES) | set(MC_LETTERS)
        for text in list(_Q.values()) + list(_A.values()) + list(REFUSALS) + list(MARKS):
            words |= {w for w in text.split() if not w.startswith("{")}
        words |= {"answer", "with", "letter", ")"}
        return words

    def _draw_names(self) -> Tuple[List[str], List[str]]:
        rng = _rng(self.seed, _TAG_NAMES)
        used = set(self._base_vocab)

        def syllable() -> str:
            return str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS))

        def draw(last: bool) -> str:
            while True:
                n = int(rng.integers(2, 4))
                word = "".join(syllable() for _ in range(n))
                if last:
                    word += str(rng.choice(_CODAS))
                elif rng.random() < 0.3:
                    word += "n"
                if 5 <= len(word) <= 8 and word not in used:
                    used.add(word)
                    return word

        firsts, lasts = [], []
        for _ in range(self.num_identities + self.num_unseen):  # unseen ones drawn after: trained names unchanged
            firsts.append(draw(last=False))
            lasts.append(draw(last=True))
        return firsts, lasts

    def _draw_looks(self) -> List[Dict[str, str]]:
        rng = _rng(self.seed, _TAG_LOOKS)
        colours = list(PALETTE)
        combos = []
        for bg in colours:
            for shape in SHAPES:
                for col in colours:
                    dist = float(np.linalg.norm(np.subtract(PALETTE[bg], PALETTE[col], dtype=float)))
                    if col != bg and dist >= _MIN_CONTRAST:
                        combos.append((bg, shape, col))
        total_families = self.num_families + self.num_unseen_families
        if total_families > len(combos):
            raise ValueError("too many families for the palette")
        # Farthest-point sampling on small canonical pictures (no stripes, no mark, no jitter): each new family look
        # is the candidate whose picture is farthest (mean abs pixel difference) from every look chosen so far.
        candidates = [combos[int(i)] for i in rng.permutation(len(combos))]
        pictures = np.stack([_canonical_picture(*c).ravel() for c in candidates])
        chosen_idx = [0]
        min_dist = np.abs(pictures - pictures[0]).mean(axis=1)
        while len(chosen_idx) < total_families:  # greedy: the trained families' looks do not depend on num_unseen
            # Mild preference for shapes / colours not used yet, so describe answers use a varied vocabulary.
            used_shapes = {candidates[k][1] for k in chosen_idx}
            used_colours = {candidates[k][2] for k in chosen_idx}
            bonus = np.array([1.0 + 0.3 * (c[1] not in used_shapes) + 0.1 * (c[2] not in used_colours) for c in candidates])
            k = int(np.argmax(min_dist * bonus))
            chosen_idx.append(k)
            min_dist = np.minimum(min_dist, np.abs(pictures - pictures[k]).mean(axis=1))
        chosen = [candidates[k] for k in chosen_idx]
        details = [(s, m) for s in STRIPES for m in MARKS]
        looks: List[Dict[str, str]] = []
        for f, members in enumerate(self._family_sizes()):
            bg, shape, col = chosen[f]
            picks = _rng(self.seed, _TAG_FAMILY, f).permutation(len(details))[:members]
            for p in picks:
                stripes, mark = details[int(p)]
                looks.append({"background": bg, "shape": shape, "colour": col, "stripes": stripes, "mark": mark})
        return looks

    def _draw_attributes(self) -> List[Dict[str, str]]:
        rng = _rng(self.seed, _TAG_ATTRS)
        out: List[Dict[str, str]] = []
        for members in self._family_sizes():
            # Family members are look-alikes but never share a profession or a city (when the pools allow it).
            profs = rng.permutation(len(PROFESSIONS))
            cities = rng.permutation(len(CITIES))
            hobbies = rng.permutation(len(HOBBIES))
            for m in range(members):
                out.append(
                    {
                        "profession": PROFESSIONS[int(profs[m % len(PROFESSIONS)])],
                        "city": CITIES[int(cities[m % len(CITIES)])],
                        "hobby": HOBBIES[int(hobbies[m % len(HOBBIES)])],
                    }
                )
        return out

    def _draw_forget_order(self) -> List[int]:
        """Priority order for forgetting. Every prefix of length <= N - num_families leaves each family with at
        least one member that is not forgotten; early entries come from distinct families."""
        perm = [int(i) for i in _rng(self.seed, _TAG_FORGET).permutation(self.num_identities)]
        family_count: Dict[int, int] = {}
        for i in perm:
            fam = i // self.family_size
            family_count[fam] = family_count.get(fam, 0) + 1
        rank_in_family: Dict[int, int] = {}
        keyed = []
        for pos, i in enumerate(perm):
            fam = i // self.family_size
            r = rank_in_family.get(fam, 0)
            rank_in_family[fam] = r + 1
            if r == family_count[fam] - 1:
                continue  # the family's anchor: never forgotten
            keyed.append((r, pos, i))
        return [i for _, _, i in sorted(keyed)]

    # ------------------------------------------------------------------------------------------- images

    def _view_params(self, index: int, view: int, heldout: bool) -> Dict[str, Any]:
        rng = _rng(self.seed, _TAG_VIEW, index, view, int(heldout))
        s = self.image_size
        if heldout:
            angle = rng.uniform(0, 2 * np.pi)
            radius = rng.uniform(0.14, 0.18) * s  # the shape sits elsewhere in the canvas
            dx = radius * np.cos(angle) + rng.uniform(-1.0, 1.0) * s / 16
            dy = radius * np.sin(angle) + rng.uniform(-1.0, 1.0) * s / 16
            scale = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.12, 0.22)
            brightness = 1.0 + rng.choice([-1.0, 1.0]) * rng.uniform(0.08, 0.16)
            noise = 9.0
        else:
            dx = rng.uniform(-1.0, 1.0) * s / 16  # +-2 px at 32
            dy = rng.uniform(-1.0, 1.0) * s / 16
            scale = 1.0 + rng.uniform(-0.1, 0.1)
            brightness = 1.0 + rng.uniform(-0.1, 0.1)
            noise = 3.0
        return {"dx": dx, "dy": dy, "scale": scale, "brightness": brightness, "noise": noise, "rng": rng}

    def _render_array(self, index: int, view: int, heldout: bool) -> np.ndarray:
        key = (index, view, heldout)
        if key in self._image_cache:
            return self._image_cache[key]
        look = self.identities[index].look
        s = self.image_size
        p = self._view_params(index, view, heldout)
        xs, ys = _grid(s)
        bg = np.asarray(PALETTE[look["background"]], dtype=np.float64)
        canvas = np.broadcast_to(bg, xs.shape + (3,)).copy()
        period = s / 8.0
        if look["stripes"] != "no":
            coord = xs if look["stripes"] == "vertical" else ys
            band = np.floor(coord / (period / 2)) % 2 == 1
            canvas[band] = bg + 0.3 * (_contrast_colour(bg) - bg)
        r = 0.28 * s * p["scale"]
        u = (xs - (s / 2 + p["dx"])) / r
        v = (ys - (s / 2 + p["dy"])) / r
        canvas[_shape_mask(look["shape"], u, v)] = PALETTE[look["colour"]]
        side, inset = s / 8.0, s / 16.0
        top = "top" in look["mark"]
        left = "left" in look["mark"]
        x0 = inset if left else s - inset - side
        y0 = inset if top else s - inset - side
        mark = (xs >= x0) & (xs < x0 + side) & (ys >= y0) & (ys < y0 + side)
        canvas[mark] = _contrast_colour(bg)
        arr = np.asarray(_finish(canvas, s, p["brightness"], p["noise"], p["rng"]))
        arr.setflags(write=False)
        self._image_cache[key] = arr
        return arr

    def render(self, identity: Any, view: int, heldout: bool = False) -> Image.Image:
        """RGB picture (``image_size`` square) of ``identity`` (an :class:`Identity` or its index) for ``view``."""
        index = identity.index if isinstance(identity, Identity) else int(identity)
        if not 0 <= index < len(self.identities):
            raise IndexError(f"identity index {index} out of range")
        limit = self.heldout_views if heldout else self.train_views
        if not 0 <= view < limit:
            raise ValueError(f"view {view} out of range for {'held-out' if heldout else 'training'} views ({limit})")
        return Image.fromarray(self._render_array(index, int(view), bool(heldout)).copy(), mode="RGB")

    def render_new_view(self, identity: Any, k: int) -> Image.Image:
        """A fresh picture of ``identity`` drawn like a held-out view (shape moved, stronger jitter) but with a view
        index beyond every training and held-out view (``_NEW_VIEW_OFFSET + k``): never used by any other row."""
        index = identity.index if isinstance(identity, Identity) else int(identity)
        if not 0 <= index < len(self.identities):
            raise IndexError(f"identity index {index} out of range")
        if k < 0:
            raise ValueError(f"new view {k} must be >= 0")
        return Image.fromarray(self._render_array(index, _NEW_VIEW_OFFSET + int(k), True).copy(), mode="RGB")

    def shift_image(self, identity: Any, view: int, shift: str) -> Image.Image:
        """Training view ``view`` of ``identity`` under an image shift of :data:`IMAGE_SHIFTS` (deterministic, seeded
        by world seed, shift, identity and view):

        * ``"crop"``: random-resized crop keeping 70-90% of the area (aspect 3/4-4/3), resized back to
          ``image_size`` (bicubic);
        * ``"flip"``: horizontal mirror. It also mirrors the corner mark (left <-> right), so it would change a
          ``describe`` answer; the shift splits only use the ``name`` kind, whose answer does not depend on it;
        * ``"colour"``: colour jitter with PIL: brightness, contrast and saturation each scaled by 1 +- 0.2..0.35
          and the hue rotated by 0.05..0.12 of the colour circle;
        * ``"new_view"``: :meth:`render_new_view` ``(identity, view)`` -- a new picture, not a transform.
        """
        from PIL import ImageEnhance, ImageOps

        if shift not in IMAGE_SHIFTS:
            raise ValueError(f"unknown image shift {shift!r}; expected one of {IMAGE_SHIFTS}")
        index = identity.index if isinstance(identity, Identity) else int(identity)
        if shift == "new_view":
            return self.render_new_view(index, view)
        image = self.render(index, view)
        rng = _rng(self.seed, _TAG_SHIFT, IMAGE_SHIFTS.index(shift), index, view)
        s = self.image_size
        if shift == "flip":
            return ImageOps.mirror(image)
        if shift == "crop":
            area = rng.uniform(0.70, 0.90) * s * s
            aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
            w = min(s, max(1, int(round(np.sqrt(area * aspect)))))
            h = min(s, max(1, int(round(np.sqrt(area / aspect)))))
            x0 = int(rng.integers(0, s - w + 1))
            y0 = int(rng.integers(0, s - h + 1))
            return image.crop((x0, y0, x0 + w, y0 + h)).resize((s, s), Image.Resampling.BICUBIC)
        # colour jitter
        def factor() -> float:
            return 1.0 + float(rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.35))

        image = ImageEnhance.Brightness(image).enhance(factor())
        image = ImageEnhance.Contrast(image).enhance(factor())
        image = ImageEnhance.Color(image).enhance(factor())
        hue_shift = int(round(float(rng.choice([-1.0, 1.0]) * rng.uniform(0.05, 0.12)) * 256))
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int64) + hue_shift) % 256
        return Image.fromarray(hsv, mode="HSV").convert("RGB")

    def distant_images(self, count: int, seed: int = 0) -> List[Image.Image]:
        """``count`` pictures of other 'people' that belong to no identity: gradient backgrounds, diagonal or checker
        patterns and one or two shapes that identities never use, without a corner mark. A candidate picture that is
        too close (mean abs pixel difference < ``_DISTANT_MIN_DIFF``) to any training view of an identity is redrawn
        (up to 50 times, then the farthest candidate is kept)."""
        views = np.stack(
            [self._render_array(i, v, False) for i in range(self.num_identities) for v in range(self.train_views)]
        ).astype(np.float64)
        out = []
        for k in range(int(count)):
            best, best_dist = None, -1.0
            for attempt in range(50):
                img = self._distant_candidate(_rng(self.seed, _TAG_DISTANT, int(seed), k, attempt))
                dist = float(np.abs(views - np.asarray(img, dtype=np.float64)).mean(axis=(1, 2, 3)).min())
                if dist > best_dist:
                    best, best_dist = img, dist
                if dist >= _DISTANT_MIN_DIFF:
                    break
            out.append(best)
        return out

    def _distant_candidate(self, rng: np.random.Generator) -> Image.Image:
        s = self.image_size
        xs, ys = _grid(s)
        colours = list(PALETTE)
        c1, c2, c3, c4 = (np.asarray(PALETTE[colours[int(j)]], float) for j in rng.permutation(len(colours))[:4])
        t = np.clip((xs * rng.uniform(-1, 1) + ys * rng.uniform(-1, 1)) / s + 0.5, 0, 1)[..., None]
        canvas = c1 * (1 - t) + c2 * t
        if rng.random() < 0.5:
            pattern = np.floor((xs + ys) / (s / 6.0)) % 2 == 1
        else:
            pattern = (np.floor(xs / (s / 5.0)) + np.floor(ys / (s / 5.0))) % 2 == 1
        canvas[pattern] = canvas[pattern] * 0.6 + 0.4 * c3
        for j in range(int(rng.integers(1, 3))):
            shape = _DISTANT_SHAPES[int(rng.integers(len(_DISTANT_SHAPES)))]
            r = rng.uniform(0.15, 0.3) * s
            cx, cy = rng.uniform(0.25, 0.75, size=2) * s
            canvas[_shape_mask(shape, (xs - cx) / r, (ys - cy) / r)] = c4 if j == 0 else c3
        return _finish(canvas, s, float(rng.uniform(0.85, 1.15)), 6.0, rng)

    # ------------------------------------------------------------------------------------------- rows

    def describe(self, identity: Identity) -> str:
        """The visual description of an identity's look (no name, no attributes)."""
        look = identity.look
        return _A["describe"].format(
            colour=look["colour"], shape=look["shape"], bg=look["background"], stripes=look["stripes"], pos=look["mark"]
        )

    def _mc(self, ident: Identity) -> Tuple[List[str], str]:
        rng = _rng(self.seed, _TAG_MC, ident.index)
        trained = self.identities[: self.num_identities]  # never-seen identities never appear as options
        family = [j.index for j in trained if j.family == ident.family and j.index != ident.index]
        others = [j.index for j in trained if j.family != ident.family]
        picks: List[int] = []
        if family:
            picks.append(family[int(rng.integers(len(family)))])
        pool = [j for j in family + others if j not in picks]
        picks += [pool[int(j)] for j in rng.permutation(len(pool))[: 3 - len(picks)]]
        answer_pos = int(rng.integers(4))
        distractors = [self.identities[j].name for j in rng.permutation(picks)]
        options = distractors[:answer_pos] + [ident.name] + distractors[answer_pos:]
        return options, MC_LETTERS[answer_pos]

    def _perturb_candidates(self, ident: Identity) -> List[Identity]:
        """Other trained identities, seeded order: family look-alikes first, then the rest."""
        order = [int(j) for j in _rng(self.seed, _TAG_PERTURB, ident.index).permutation(self.num_identities)]
        others = [self.identities[j] for j in order if j != ident.index]
        return [j for j in others if j.family == ident.family] + [j for j in others if j.family != ident.family]

    def perturbed_answers(self, ident: Identity, kind: str) -> List[str]:
        """:data:`NUM_PERTURBED` wrong answers (TOFU's perturbed answers) for a kind of :data:`PARAPHRASE_KINDS`:
        as in TOFU, the *paraphrased* answer's template (:data:`PARAPHRASE_ANSWERS`, never trained) filled with other
        trained identities' values, family look-alikes first (deterministic). Perturbed and paraphrased answers share
        one wording, so the truth ratio compares facts, not a trained wording against an untrained one (with the
        trained template the retrained model preferred every wrong answer ~700 to 1). ``name`` and ``open`` swap the whole person (name; name, profession and
        city); ``profession`` / ``city`` (and their text kinds) keep the name and swap the attribute."""
        if kind not in PARAPHRASE_KINDS:
            return []
        cands = self._perturb_candidates(ident)
        a = ident.attributes
        out: List[str] = []
        if kind in ("name", "open"):
            people = [(c.name, c.attributes["profession"], c.attributes["city"]) for c in cands]
            # few identities: add confused names (first name of one, last name of the next), still well formed
            people += [(f"{c.first} {d.last}", c.attributes["profession"], d.attributes["city"])
                       for c, d in zip(cands, cands[1:] + cands[:1])]
            for name, prof, city in people:
                text = PARAPHRASE_ANSWERS[kind].format(name=name, prof=prof, city=city)
                if name != ident.name and text not in out:
                    out.append(text)
        else:
            attr = kind.replace("text_", "")
            pool = PROFESSIONS if attr == "profession" else CITIES
            values = [c.attributes[attr] for c in cands]
            values += [pool[int(j)] for j in _rng(self.seed, _TAG_PERTURB, ident.index, 1).permutation(len(pool))]
            for value in values:
                text = PARAPHRASE_ANSWERS[kind].format(name=ident.name, prof=value, city=value)
                if value != a[attr] and text not in out:
                    out.append(text)
        return out[:NUM_PERTURBED]

    def paraphrased_answer(self, ident: Identity, kind: str) -> str:
        """The correct answer in a reworded template (never trained), for kinds of :data:`PARAPHRASE_KINDS`."""
        if kind not in PARAPHRASE_KINDS:
            return ""
        a = ident.attributes
        return PARAPHRASE_ANSWERS[kind].format(name=ident.name, prof=a["profession"], city=a["city"])

    def _row(
        self,
        ident: Identity,
        kind: str,
        view: int,
        heldout: bool,
        image: Optional[Image.Image],
        paraphrase: int = -1,
    ) -> Dict[str, Any]:
        a = ident.attributes
        options: List[str] = []
        letter = ""
        if kind == "mc":
            options, letter = self._mc(ident)
            body = " ".join(f"{MC_LETTERS[i]} ) {o}" for i, o in enumerate(options))
            question = f"{_Q['mc']} {body} answer with a letter ."
            answer = letter
        elif kind == "describe":
            question, answer = _Q[kind], self.describe(ident)
        else:
            question = _Q[kind].format(name=ident.name)
            answer = _A[kind].format(name=ident.name, prof=a["profession"], city=a["city"])
        if paraphrase >= 0:
            question = PARAPHRASE_QUESTIONS[kind][paraphrase].format(name=ident.name)
        if kind in TEXT_KINDS:
            row_id = f"{ident.id}/{kind}/text"
        else:
            row_id = f"{ident.id}/{kind}/{'h' if heldout else 'v'}{view}"
        if paraphrase >= 0:
            row_id += f"/p{paraphrase}"
        return {
            "id": row_id,
            "identity": ident.index,
            "identity_id": ident.id,
            "name": ident.name,
            "concepts": [ident.name, ident.last],
            "kind": kind,
            "image": image,
            "question": question,
            "answer": answer,
            "view": view,
            "heldout": heldout,
            "family": ident.family,
            "attributes": dict(a),
            "options": options,
            "answer_letter": letter,
            "perturbed_answers": self.perturbed_answers(ident, kind),
            "paraphrased_answer": self.paraphrased_answer(ident, kind),
            "paraphrase": int(paraphrase),
            "shift": "",
        }

    def _image_rows(
        self, indices: Sequence[int], kinds: Sequence[str], views: Sequence[int], heldout: bool = False
    ) -> List[Dict[str, Any]]:
        rows = []
        for i in indices:
            ident = self.identities[i]
            for view in views:
                image = self.render(ident, view, heldout)  # one picture shared by all kinds of this view
                rows.extend(self._row(ident, kind, view, heldout, image) for kind in kinds)
        return rows

    def _text_rows(self, indices: Sequence[int]) -> List[Dict[str, Any]]:
        return [self._row(self.identities[i], kind, -1, False, None) for i in indices for kind in TEXT_KINDS]

    def train_rows(self) -> List[Dict[str, Any]]:
        """Everything the full model is fine-tuned on: the six image kinds on every training view (mc on view 0
        only) plus the two text-only kinds, for every identity."""
        rows: List[Dict[str, Any]] = []
        per_view = [k for k in IMAGE_KINDS if k != "mc"]
        for i in range(self.num_identities):
            rows.extend(self._image_rows([i], per_view, [0]))
            rows.extend(self._image_rows([i], ["mc"], [0]))
            rows.extend(self._image_rows([i], per_view, range(1, self.train_views)))
            rows.extend(self._text_rows([i]))
        return rows

    def forget_identities(self, ratio: float) -> List[int]:
        """Sorted indices of the ``max(1, round(ratio * N))`` identities to forget. Sets are nested across ratios
        (a prefix of one seed-derived order) and every forget identity keeps a non-forgotten family member."""
        ratio = float(ratio)
        if not 0.0 < ratio < 1.0:
            raise ValueError("ratio must be in (0, 1)")
        k = max(1, int(round(ratio * self.num_identities)))
        if k > len(self._forget_order):
            raise ValueError(
                f"cannot forget {k} identities and keep a family member of each; at most {len(self._forget_order)}"
            )
        return sorted(self._forget_order[:k])

    def splits(self, ratio: float = 0.10) -> Dict[str, List[Dict[str, Any]]]:
        """Evaluation / training splits for a forget ratio (see the project docs for each key)."""
        forget = self.forget_identities(ratio)
        fset = set(forget)
        retain = [i for i in range(self.num_identities) if i not in fset]
        forget_families = {self.identities[i].family for i in forget}
        proximal_ids = [i for i in retain if self.identities[i].family in forget_families]
        train_views = range(self.train_views)
        heldout_views = range(self.heldout_views)
        out: Dict[str, List[Dict[str, Any]]] = {}
        out["forget"] = self._image_rows(forget, FACT_KINDS, train_views)
        out["forget_train"] = [dict(r) for r in out["forget"]]
        out["generalization"] = self._image_rows(forget, FACT_KINDS, heldout_views, heldout=True)
        out["retain"] = self._image_rows(retain, FACT_KINDS, range(min(2, self.train_views)))
        out["retain_train"] = self._image_rows(retain, [k for k in IMAGE_KINDS if k != "mc"], train_views)
        proximal = []
        for i in proximal_ids:
            proximal += self._image_rows([i], ["name"], heldout_views, heldout=True)
            proximal += self._image_rows([i], ["name"], [0])
        out["proximal"] = proximal
        out["text_forget"] = self._text_rows(forget)
        out["text_retain"] = self._text_rows(retain)
        out["describe"] = self._image_rows(forget, ["describe"], train_views)
        out["mc_forget"] = self._image_rows(forget, ["mc"], [0])
        out["mc_retain"] = self._image_rows(retain, ["mc"], [0])
        out["distant"] = self.distant_rows(16)
        # robustness probes (issue 14): never-seen identities, reworded questions, shifted images
        out["unseen"] = self._image_rows(self.unseen_identities, FACT_KINDS, train_views)
        out["text_unseen"] = self._text_rows(self.unseen_identities)
        n_templates = len(PARAPHRASE_QUESTIONS["name"])
        out["paraphrase_forget"] = self._paraphrase_rows([(i, v, None) for i in forget for v in train_views])
        # retain: one training view per identity and one template per question (rotating over identities and
        # kinds), so every retain identity is asked and the split stays small (6 rows per identity)
        out["paraphrase_retain"] = self._paraphrase_rows(
            [(i, i % self.train_views, i % n_templates) for i in retain]
        )
        for t in IMAGE_SHIFTS:
            out[f"shift_{t}_forget"] = self._shift_rows(forget, train_views, t)
            out[f"shift_{t}_retain"] = self._shift_rows(retain, range(min(_SHIFT_RETAIN_VIEWS, self.train_views)), t)
        return out

    def _paraphrase_rows(self, items: Sequence[Tuple[int, int, Optional[int]]]) -> List[Dict[str, Any]]:
        """Rows of :data:`PARAPHRASE_KINDS` with reworded questions for ``(identity, view, template)`` items: the
        four fact kinds on that training view and, once per identity, the text kinds. ``template`` None: every
        template; an int: that one, rotated by the kind's position."""
        rows: List[Dict[str, Any]] = []
        texts_done = set()
        for i, view, template in items:
            ident = self.identities[i]
            image = self.render(ident, view)
            kinds = [(k, image, view) for k in FACT_KINDS]
            if i not in texts_done:
                texts_done.add(i)
                kinds += [(k, None, -1) for k in TEXT_KINDS]
            for pos, (kind, img, v) in enumerate(kinds):
                n = len(PARAPHRASE_QUESTIONS[kind])
                templates = range(n) if template is None else [(template + pos) % n]
                rows.extend(self._row(ident, kind, v, False, img, paraphrase=t) for t in templates)
        return rows

    def _shift_rows(self, indices: Sequence[int], views: Sequence[int], shift: str) -> List[Dict[str, Any]]:
        """``name`` rows on shifted training views (see :meth:`shift_image`), with field ``"shift"``."""
        rows = []
        for i in indices:
            ident = self.identities[i]
            for view in views:
                row = self._row(ident, "name", view, False, self.shift_image(ident, view, shift))
                row["id"] += f"/{shift}"
                row["shift"] = shift
                if shift == "new_view":
                    row["view"], row["heldout"] = _NEW_VIEW_OFFSET + int(view), True
                    row["id"] = f"{ident.id}/name/n{view}/{shift}"
                rows.append(row)
        return rows

    def distant_rows(self, count: int = 16, seed: int = 0) -> List[Dict[str, Any]]:
        """Reference rows (kind ``"distant"``) with :meth:`distant_images` and an empty answer."""
        return [
            {
                "id": f"distant/{k}",
                "identity": -1,
                "identity_id": "",
                "name": "",
                "concepts": [],
                "kind": "distant",
                "image": image,
                "question": _Q["name"],
                "answer": "",
                "view": -1,
                "heldout": False,
                "family": -1,
                "attributes": {"profession": "", "city": "", "hobby": ""},
                "options": [],
                "answer_letter": "",
                "perturbed_answers": [],
                "paraphrased_answer": "",
                "paraphrase": -1,
                "shift": "",
            }
            for k, image in enumerate(self.distant_images(count, seed=seed))
        ]

    # ------------------------------------------------------------------------------------------- text helpers

    def corpus(self) -> List[str]:
        """Every question, answer and option text of the world (plus refusals), deduplicated, in a fixed order: the
        trained identities' rows, then the never-seen identities' rows (no multiple choice), then the reworded
        questions and answers (so their words are whole-word tokens although no training row uses them)."""
        texts: List[str] = []
        for ident in self.identities:
            unseen = ident.index >= self.num_identities
            for kind in KINDS:
                if unseen and kind == "mc":
                    continue
                row = self._row(ident, kind, 0, False, None)
                texts += [row["question"], row["answer"], *row["options"]]
        texts += list(REFUSALS)
        for ident in self.identities:
            for kind in PARAPHRASE_KINDS:
                texts += [q.format(name=ident.name) for q in PARAPHRASE_QUESTIONS[kind]]
                texts.append(self.paraphrased_answer(ident, kind))
        return list(dict.fromkeys(texts))

    def name_words(self) -> List[str]:
        """The invented name words (first and last of every identity, never-seen ones included, in index order)."""
        return [w for ident in self.identities for w in (ident.first, ident.last)]

    def is_well_formed(self, text: str) -> bool:
        """The world's grammar check; see the module docstring."""
        if not isinstance(text, str):
            return False
        tokens = _normalize(text)
        if not tokens:
            return False
        if len(tokens) == 1 and tokens[0] in MC_LETTERS:
            return True
        if " ".join(tokens) in REFUSALS:
            return True
        return any(self._match(tokens, template) for template in _GRAMMAR_TEMPLATES)

    def _match(self, tokens: List[str], template: Sequence[str]) -> bool:
        slots = {
            "<prof>": PROFESSIONS,
            "<city>": CITIES,
            "<colour>": PALETTE,
            "<shape>": SHAPES,
            "<stripes>": STRIPES,
        }
        i = 0
        for t in template:
            if t == "<name>":
                if i + 2 > len(tokens) or tokens[i] not in self._firsts or tokens[i + 1] not in self._lasts:
                    return False
                i += 2
            elif t == "<pos>":
                if " ".join(tokens[i : i + 2]) not in MARKS:
                    return False
                i += 2
            elif t in slots:
                if i >= len(tokens) or tokens[i] not in slots[t]:
                    return False
                i += 1
            else:
                if i >= len(tokens) or tokens[i] != t:
                    return False
                i += 1
        return i == len(tokens)

    def fingerprint(self) -> str:
        """Short stable hash of the generator parameters and :data:`GENERATOR_VERSION`."""
        params = {
            "version": GENERATOR_VERSION,
            "num_identities": self.num_identities,
            "family_size": self.family_size,
            "seed": self.seed,
            "image_size": self.image_size,
            "train_views": self.train_views,
            "heldout_views": self.heldout_views,
            "num_unseen": self.num_unseen,
        }
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]

    def __repr__(self) -> str:
        return (
            f"ToyWorld(num_identities={self.num_identities}, family_size={self.family_size}, seed={self.seed}, "
            f"image_size={self.image_size}, train_views={self.train_views}, heldout_views={self.heldout_views}, "
            f"num_unseen={self.num_unseen})"
        )


# ----------------------------------------------------------------------------------------------------- datasets


def to_dataset(rows: Sequence[Dict[str, Any]]):
    """Rows -> :class:`datasets.Dataset` with an ``Image`` feature for ``"image"`` (``None`` for text-only rows)."""
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage
    from datasets import Sequence as HFSequence

    features = Features(
        {
            "id": Value("string"),
            "identity": Value("int64"),
            "identity_id": Value("string"),
            "name": Value("string"),
            "concepts": HFSequence(Value("string")),
            "kind": Value("string"),
            "image": HFImage(),
            "question": Value("string"),
            "answer": Value("string"),
            "view": Value("int64"),
            "heldout": Value("bool"),
            "family": Value("int64"),
            "attributes": {"profession": Value("string"), "city": Value("string"), "hobby": Value("string")},
            "options": HFSequence(Value("string")),
            "answer_letter": Value("string"),
            "perturbed_answers": HFSequence(Value("string")),
            "paraphrased_answer": Value("string"),
            "paraphrase": Value("int64"),
            "shift": Value("string"),
        }
    )
    clean = []
    for row in rows:
        r = {key: row.get(key) for key in features}
        attrs = dict(row.get("attributes") or {})
        r["attributes"] = {k: str(attrs.get(k, "")) for k in ("profession", "city", "hobby")}
        r["concepts"] = list(row.get("concepts") or [])
        r["options"] = list(row.get("options") or [])
        r["perturbed_answers"] = list(row.get("perturbed_answers") or [])
        r["paraphrased_answer"] = str(row.get("paraphrased_answer") or "")
        r["paraphrase"] = int(row.get("paraphrase", -1) if row.get("paraphrase") is not None else -1)
        r["shift"] = str(row.get("shift") or "")
        clean.append(r)
    return Dataset.from_list(clean, features=features)
