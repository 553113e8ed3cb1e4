"""Synthetic, labelled story corpus for the embedded zoo.

Pure Python (standard library only), deterministic given a seed.

Every generated text is a :class:`LabelledText`: the text, plus a list of
:class:`Span` objects giving the character offsets of every *concept word*
(names, pronouns, colours, textures, furniture, emotions, intensity adverbs,
person adjectives, places, animals, ...).  ``text[span.start:span.end] ==
span.text`` always holds, so after tokenisation each token can be mapped to
the concept it belongs to (see :func:`token_labels`).

Two kinds of generators live here:

* :func:`generate_stories` / :func:`iter_stories` -- the training corpus: short
  stories with controlled attributes and simple plots whose parts depend on
  each other over long distances (a character's name and gender, an object's
  texture and colour, the animal that makes a sound, the event that causes an
  emotion, the intensity that decides the reaction, a trait that decides the
  behaviour, a topic line that announces what the story is about, an
  instruction line "Never mention W." that the rest of the story obeys).
* Template families used by ideas -- :func:`furniture_grid` ("the [texture]
  [colour] [furniture]"), :func:`person_adjective_prompts` ("a person described
  by an adjective"), :func:`intensity_ladder_prompts` ("slightly / quite / very /
  extremely happy"), :func:`emotion_event_prompts`, :func:`topic_prompts`,
  :func:`ignore_prompts` and :func:`story_prefixes` (neutral prompts for
  steering), with :data:`CONCEPTS` (concept name -> word list) to score concept
  presence.

Opening lines (corpus version 2).  A story may open with

* a topic line ("A story about cake.", "This is a story about a dog.") in 15%
  of the stories without an instruction line; the topic word is one the story
  then uses (``attrs["topic"] = {"kind", "value"}``, else ``None``);
* an instruction line ``"Never mention W."`` (:data:`IGNORE_TEMPLATE`) in about
  10% of the stories (:data:`NEVER_RATE`), where W is the food, place or animal
  (an animal only in stories with an animal scene) the story drew for that slot;
  the slot is then re-drawn from the other words, so **the word W inside the
  instruction line is its only occurrence in the story** (checked by the
  generator, as a whole word, case-insensitive, plural "-s" included: a violation
  raises ``AssertionError``).  Half of these stories put a topic line about a
  *different* word before it ("A story about park. Never mention cake.").
  ``attrs["never"] = {"kind": "food" | "place" | "animal", "value": W}`` (else
  ``None``), and W inside the line is a :class:`Span` with its usual category
  (``food`` / ``place`` / ``animal``, ``entity=None``), so :func:`token_labels`
  labels it like any other occurrence -- a concept-presence score that counts
  labelled words must skip the instruction line itself.

All word lists use words that are single tokens of the zoo tokenizer (with a
leading space), so a slot is exactly one token in the middle of a sentence.
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any, Iterator, Mapping, Sequence

__all__ = [
    "CORPUS_VERSION",
    "Span",
    "LabelledText",
    "Story",
    "Prompt",
    "generate_stories",
    "iter_stories",
    "story",
    "token_labels",
    "furniture_grid",
    "person_adjective_prompts",
    "intensity_ladder_prompts",
    "emotion_event_prompts",
    "topic_prompts",
    "ignore_prompts",
    "IGNORE_TEMPLATE",
    "IGNORE_CONCEPTS",
    "NEVER_RATE",
    "story_prefixes",
    "PREAMBLE",
    "CONCEPTS",
    "CATEGORIES",
    "NAMES",
    "FEMALE_NAMES",
    "MALE_NAMES",
    "PERSONS",
    "TRAITS",
    "INTENSITIES",
    "INTENSITY_LEVEL",
    "EMOTIONS",
    "POSITIVE_EMOTIONS",
    "NEGATIVE_EMOTIONS",
    "TEXTURES",
    "COLOURS",
    "FURNITURE",
    "TOYS",
    "PLACES",
    "ANIMALS",
    "ANIMAL_SOUNDS",
    "FOODS",
    "WEATHERS",
    "TIMES",
    "SIZES",
]

#: Bump when the generator's output for a given seed changes.
CORPUS_VERSION = 2

#: The instruction line; the word is the only occurrence of that word in the story.
IGNORE_TEMPLATE = "Never mention {word}."
#: Fraction of corpus stories that open with an instruction line.
NEVER_RATE = 0.10
#: Concepts (keys of CONCEPTS) whose words the corpus's instruction lines name.
IGNORE_CONCEPTS = ("food", "places", "animals")

# --------------------------------------------------------------------------- vocab

FEMALE_NAMES = [
    "Mia", "Lily", "Emma", "Anna", "Sara", "Lucy", "Ella", "Rose", "Amy", "Kate",
    "Zoe", "Lisa", "Nina", "Sophie", "Grace", "Ruby", "Alice", "Maya", "Julia", "Clara",
]
MALE_NAMES = [
    "Tom", "Ben", "Sam", "Max", "Jack", "Leo", "Tim", "Joe", "Dan", "Bob",
    "Alex", "Finn", "Noah", "Luke", "Oliver", "Adam", "Peter", "Paul", "Henry", "Oscar",
]
NAMES = FEMALE_NAMES + MALE_NAMES
_NAME_GENDER = {**{n: "f" for n in FEMALE_NAMES}, **{n: "m" for n in MALE_NAMES}}

#: person noun -> gender ("f", "m", or None = taken from the name)
PERSONS: dict[str, str | None] = {
    "girl": "f", "boy": "m", "woman": "f", "man": "m", "princess": "f", "prince": "m",
    "queen": "f", "king": "m", "farmer": None, "teacher": None, "doctor": None, "baker": None,
}

#: person adjectives ("a person described by an adjective") and what they make people do
TRAITS = [
    "kind", "brave", "shy", "clever", "funny", "lazy", "grumpy", "curious",
    "friendly", "quiet", "silly", "gentle",
]
_TRAIT_BEHAVIOUR: dict[str, list[str]] = {
    "kind": ["{^N} always shared {poss} food with others.", "{^N} helped everyone in the town."],
    "brave": ["{^N} was not afraid of anything.", "{^N} liked to climb the tallest trees."],
    "shy": ["{^N} did not talk to anyone.", "{^N} hid when people came to visit."],
    "clever": ["{^N} could read very big books.", "{^N} always had good ideas."],
    "funny": ["{^N} told jokes all day long.", "{^N} made everyone laugh."],
    "lazy": ["{^N} liked to sleep all day.", "{^N} never wanted to work."],
    "grumpy": ["{^N} did not like anything.", "{^N} was cross with everyone."],
    "curious": ["{^N} asked many questions.", "{^N} wanted to know how things worked."],
    "friendly": ["{^N} said hello to everyone.", "{^N} had many friends."],
    "quiet": ["{^N} liked to sit alone and read.", "{^N} never made a sound."],
    "silly": ["{^N} made funny faces at everyone.", "{^N} wore {poss} hat upside down."],
    "gentle": ["{^N} was careful with little animals.", "{^N} spoke in a soft voice."],
}
_TRAIT_RESPONSE: dict[str, list[str]] = {
    "kind": ["{^N} gave {F} a big hug.", "{^N} said thank you to {F}."],
    "brave": ["{^N} stood up tall.", "{^N} was brave and did not run away."],
    "shy": ["{^N} looked down at {poss} feet.", "{^N} hid behind {F}."],
    "clever": ["{^N} thought of a good plan.", "{^N} had a clever idea."],
    "funny": ["{^N} told {F} a funny joke.", "{^N} made a funny face."],
    "lazy": ["{^N} lay down on the grass.", "{^N} did not want to move."],
    "grumpy": ["{^N} said it was all silly.", "{^N} folded {poss} arms."],
    "curious": ["{^N} wanted to know what happened.", "{^N} looked around to find out more."],
    "friendly": ["{^N} smiled at {F}.", "{^N} asked {F} to play."],
    "quiet": ["{^N} did not say a word.", "{^N} sat down quietly."],
    "silly": ["{^N} danced a silly dance.", "{^N} laughed a silly laugh."],
    "gentle": ["{^N} spoke softly to {F}.", "{^N} held {F}'s hand."],
}

#: intensity adverbs, weakest to strongest, and their level (1..4)
INTENSITIES = ["slightly", "quite", "very", "extremely"]
INTENSITY_LEVEL = {w: i + 1 for i, w in enumerate(INTENSITIES)}

EMOTIONS = ["happy", "sad", "angry", "scared", "excited", "tired", "surprised", "bored"]
POSITIVE_EMOTIONS = ["happy", "excited", "surprised"]
NEGATIVE_EMOTIONS = ["sad", "angry", "scared", "tired", "bored"]

#: emotion -> reactions for low intensity (levels 1-2) and high intensity (levels 3-4)
_REACTIONS: dict[str, dict[str, list[str]]] = {
    "happy": {
        "low": ["{^P} smiled a little.", "{^P} gave a small smile."],
        "high": ["{^P} laughed and danced around.", "{^P} jumped and shouted with joy."],
    },
    "sad": {
        "low": ["{^P} gave a little sigh.", "{^P} looked down for a moment."],
        "high": ["{^P} cried and cried.", "{^P} sat down and wept."],
    },
    "angry": {
        "low": ["{^P} frowned a little.", "{^P} made a small grumble."],
        "high": ["{^P} stamped {poss} feet and shouted.", "{^P} went red and yelled."],
    },
    "scared": {
        "low": ["{^P} held {poss} breath.", "{^P} stepped back a little."],
        "high": ["{^P} screamed and ran away.", "{^P} shook all over."],
    },
    "excited": {
        "low": ["{^P} clapped {poss} hands.", "{^P} hummed a happy song."],
        "high": ["{^P} jumped up and down.", "{^P} could not sit still."],
    },
    "tired": {
        "low": ["{^P} gave a small yawn.", "{^P} rubbed {poss} eyes."],
        "high": ["{^P} fell asleep at once.", "{^P} could not keep {poss} eyes open."],
    },
    "surprised": {
        "low": ["{^P} blinked twice.", "{^P} raised {poss} eyebrows."],
        "high": ["{^P} gasped and opened {poss} mouth wide.", "{^P} almost fell over."],
    },
    "bored": {
        "low": ["{^P} looked out of the window.", "{^P} tapped {poss} fingers."],
        "high": ["{^P} stared at the wall for hours.", "{^P} sighed and sighed all day."],
    },
}

TEXTURES = ["soft", "hard", "smooth", "rough", "fluffy", "shiny", "bumpy", "fuzzy"]
COLOURS = ["red", "blue", "green", "yellow", "purple", "pink", "white", "black", "brown", "grey"]
FURNITURE = ["chair", "table", "bed", "sofa", "lamp", "shelf", "desk", "bench", "stool", "cupboard"]
_SITTABLE = {"chair", "bed", "sofa", "bench", "stool"}
#: what a texture feels like, used when someone touches the furniture
_TEXTURE_FEEL = {
    "soft": "like a cloud", "hard": "like a rock", "smooth": "like glass",
    "rough": "like a stone", "fluffy": "like a cat", "shiny": "like a mirror",
    "bumpy": "like a road", "fuzzy": "like a peach",
}

TOYS = ["ball", "kite", "doll", "book", "hat", "boat", "drum", "box", "cup", "bag", "train", "ring"]

PLACES = [
    "park", "beach", "forest", "garden", "farm", "kitchen", "school", "river",
    "market", "castle", "library", "zoo",
]
_PLACE_ACTIVITY: dict[str, list[str]] = {
    "park": ["played on the swings", "ran around the pond"],
    "beach": ["built a castle in the sand", "looked for shells by the sea"],
    "forest": ["picked mushrooms under the trees", "listened to the birds in the trees"],
    "garden": ["watered the flowers", "planted some seeds"],
    "farm": ["fed the chickens", "helped with the hay"],
    "kitchen": ["baked a cake", "made some soup"],
    "school": ["drew a picture", "learned to count"],
    "river": ["threw stones into the water", "watched the fish swim"],
    "market": ["looked at the fruit", "counted some coins"],
    "castle": ["climbed the tall tower", "looked at the old walls"],
    "library": ["read a book about stars", "found a book about ships"],
    "zoo": ["looked at the lions", "watched the monkeys play"],
}

_HOMES = ["park", "beach", "forest", "farm", "river", "market", "castle", "zoo"]

ANIMALS = ["dog", "cat", "bird", "duck", "frog", "horse", "cow", "owl", "mouse", "bear", "sheep", "pig"]
ANIMAL_SOUNDS = {
    "dog": "barked", "cat": "meowed", "bird": "sang", "duck": "quacked", "frog": "croaked",
    "horse": "neighed", "cow": "mooed", "owl": "hooted", "mouse": "squeaked",
    "bear": "growled", "sheep": "bleated", "pig": "grunted",
}
SIZES = ["little", "small", "big", "huge"]

FOODS = ["cake", "apple", "bread", "soup", "cookies", "pie", "cheese", "banana", "pizza", "honey", "grapes", "carrots"]

WEATHERS = ["sunny", "rainy", "windy", "snowy", "cloudy"]
TIMES = ["morning", "afternoon", "evening", "day"]
_WEATHER_EFFECT = {
    "sunny": ["{^N} put on {poss} sun hat.", "The sun was warm and bright."],
    "rainy": ["{^N} took {poss} umbrella.", "{^N} put on {poss} rain boots."],
    "windy": ["The wind blew the leaves around.", "{^N} held on to {poss} hat."],
    "snowy": ["{^N} put on {poss} warm coat.", "The snow was cold and white."],
    "cloudy": ["The sky was grey and dull.", "{^N} hoped it would not rain."],
}

#: concept name -> words, for concept-presence scores (e.g. steering)
CONCEPTS: dict[str, list[str]] = {
    "animals": ANIMALS,
    "food": FOODS,
    "colours": COLOURS,
    "textures": TEXTURES,
    "furniture": FURNITURE,
    "toys": TOYS,
    "places": PLACES,
    "weather": WEATHERS,
    "emotions": EMOTIONS,
    "positive_emotions": POSITIVE_EMOTIONS,
    "negative_emotions": NEGATIVE_EMOTIONS,
    "traits": TRAITS,
    "names": NAMES,
}

#: every span category the generator emits
CATEGORIES = [
    "name", "pronoun", "person", "trait", "intensity", "emotion", "texture", "colour",
    "furniture", "toy", "place", "animal", "sound", "size", "food", "weather", "time",
]

# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Span:
    """One labelled word: ``text[start:end] == self.text``.

    ``category`` is one of :data:`CATEGORIES`; ``value`` is the canonical
    (lower-case) word, e.g. ``"she"`` for a capitalised ``"She"``; ``entity``
    says which story entity the word refers to (0 = main character, 1 = friend,
    2 = the furniture, 3 = the toy, 4 = the animal) or is ``None``; ``level`` is
    the intensity level (1..4) for intensity adverbs and for the word they
    modify, else ``None``.
    """

    start: int
    end: int
    text: str
    category: str
    value: str
    entity: int | None = None
    level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LabelledText:
    """A text with labelled concept spans and text-level attributes."""

    text: str
    spans: list[Span] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    def spans_of(self, category: str) -> list[Span]:
        return [s for s in self.spans if s.category == category]

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "spans": [s.to_dict() for s in self.spans], "attrs": self.attrs}


Story = LabelledText
Prompt = LabelledText


@dataclass(frozen=True)
class _Slot:
    word: str
    category: str
    value: str
    entity: int | None = None
    level: int | None = None


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.pos = 0

    def text(self, s: str) -> None:
        self.parts.append(s)
        self.pos += len(s)

    def slot(self, s: _Slot, capital: bool = False) -> None:
        word = s.word[:1].upper() + s.word[1:] if capital else s.word
        self.spans.append(Span(self.pos, self.pos + len(word), word, s.category, s.value, s.entity, s.level))
        self.text(word)

    def build(self, attrs: dict[str, Any]) -> LabelledText:
        return LabelledText("".join(self.parts), self.spans, attrs)


_FMT = string.Formatter()


def _render(b: _Builder, template: str, slots: Mapping[str, _Slot | str]) -> None:
    """Append ``template`` to ``b``; ``{key}`` fills a slot, ``{^key}`` capitalises it."""
    for literal, fieldname, _spec, _conv in _FMT.parse(template):
        if literal:
            b.text(literal)
        if fieldname is None:
            continue
        capital = fieldname.startswith("^")
        key = fieldname.lstrip("^")
        v = slots[key]
        if isinstance(v, _Slot):
            b.slot(v, capital)
        else:
            b.text(v[:1].upper() + v[1:] if capital else v)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


# --------------------------------------------------------------------------- characters


@dataclass
class _Character:
    name: str
    gender: str
    person: str
    trait: str
    entity: int

    def slots(self, prefix: str = "") -> dict[str, _Slot]:
        subj, obj, poss = ("she", "her", "her") if self.gender == "f" else ("he", "him", "his")
        e = self.entity
        return {
            prefix + "N": _Slot(self.name, "name", self.name, e),
            prefix + "P": _Slot(subj, "pronoun", subj, e),
            prefix + "O": _Slot(obj, "pronoun", obj, e),
            prefix + "poss": _Slot(poss, "pronoun", poss, e),
            prefix + "person": _Slot(self.person, "person", self.person, e),
            prefix + "trait": _Slot(self.trait, "trait", self.trait, e),
        }


def _make_character(rng: random.Random, entity: int, avoid: Sequence[str] = ()) -> _Character:
    person = rng.choice(list(PERSONS))
    gender = PERSONS[person] or rng.choice(["f", "m"])
    pool = [n for n in (FEMALE_NAMES if gender == "f" else MALE_NAMES) if n not in avoid]
    return _Character(rng.choice(pool), gender, person, rng.choice(TRAITS), entity)


# --------------------------------------------------------------------------- stories

_INTROS = [
    "Once upon a time, there was {a} {trait} {person} named {N}.",
    "There once lived {a} {trait} {person} called {N}.",
    "{^N} was {a} {trait} {person} who lived near the {home}.",
    "Once upon a time, there was {a_int} {int} {trait} {person} named {N}.",
    "{^N} was {a_int} {int} {trait} {person}.",
]
_INTRO_FRIEND = [
    "{^N} had a friend named {FN}.",
    "{^N}'s best friend was {a_F} {Ftrait} {Fperson} called {FN}.",
]
_SETTING = [
    "One {weather} {time}, {N} went to the {place}.",
    "It was a {weather} {time}. {^N} walked to the {place}.",
    "On a {weather} {time}, {N} and {poss} mum went to the {place}.",
]
_SETTING_FRIEND = [
    "One {weather} {time}, {N} and {FN} went to the {place}.",
    "It was a {weather} {time}. {^N} and {FN} walked to the {place}.",
]
_FURNITURE_SCENE = [
    "At the {place}, {N} saw {a_tex} {tex} {col} {furn}.",
    "Near the gate, there was {a_tex} {tex} {col} {furn}.",
    "{^N} found {a_tex} {tex} {col} {furn} in the corner.",
]
_FURNITURE_FOLLOW = [
    "{^N} touched the {furn}. It was {tex} {feel}.",
    "{^N} liked the {col} {furn} very much.",
    "{^N} had never seen such a {col} {furn} before.",
    "The {furn} was {tex} and {col}.",
]
_ANIMAL_SCENE = [
    "Then {a_size} {size} {acol} {animal} came by. The {animal} {sound}.",
    "Suddenly {a_size} {size} {acol} {animal} ran past. The {animal} {sound} loudly.",
    "{^N} saw {a_size} {size} {animal} near the {place}. The {animal} {sound}.",
]
#: emotion -> event sentences; keys they need: "F" = a friend, "furn" = furniture seen, "animal"
_EVENTS: dict[str, list[tuple[str, tuple[str, ...]]]] = {
    "happy": [
        ("{^N} found {poss} {tcol} {toy} under a tree.", ()),
        ("{^FN} gave {N} a {tcol} {toy}.", ("F",)),
        ("{^N} ate a big piece of {food}.", ()),
        ("{^N} won a race at the {place}.", ()),
    ],
    "sad": [
        ("{^N} lost {poss} {tcol} {toy}.", ()),
        ("{^N}'s {tcol} {toy} fell into the water.", ()),
        ("{^FN} had to go home early.", ("F",)),
        ("{^N} dropped {poss} {food} on the ground.", ()),
    ],
    "angry": [
        ("The {animal} took {N}'s {tcol} {toy} and ran away.", ("animal",)),
        ("{^FN} broke {N}'s {tcol} {toy}.", ("F",)),
        ("Someone ate all of {N}'s {food}.", ()),
        ("A big boy pushed {N} into the mud.", ()),
    ],
    "scared": [
        ("{^N} heard a loud noise in the dark.", ()),
        ("A huge {animal} jumped out from behind the {furn}.", ("furn", "animal")),
        ("A storm came and the sky went dark.", ()),
        ("{^N} got lost at the {place}.", ()),
    ],
    "excited": [
        ("{^N} was going to a party the next day.", ()),
        ("{^FN} said they would go to the {place2} tomorrow.", ("F",)),
        ("{^N} got a new {tcol} {toy}.", ()),
        ("{^N} saw a rainbow over the {place}.", ()),
    ],
    "tired": [
        ("{^N} walked all the way home from the {place}.", ()),
        ("{^N} played at the {place} all day long.", ()),
        ("{^N} carried the {furn} all the way home.", ("furn",)),
        ("{^N} stayed up very late.", ()),
    ],
    "surprised": [
        ("{^N} saw the {animal} sitting on the {furn}.", ("furn", "animal")),
        ("{^FN} jumped out and shouted hello.", ("F",)),
        ("{^N} found a {tcol} {toy} inside the {furn}.", ("furn",)),
        ("It started to snow in the middle of summer.", ()),
    ],
    "bored": [
        ("There was nothing to do at the {place}.", ()),
        ("{^N} waited and waited for {FN}.", ("F",)),
        ("{^N} had to sit still for a long time.", ()),
        ("The rain kept {N} inside all day.", ()),
    ],
}
_FEEL = [
    "{^N} felt {int} {emo}.",
    "{^N} was {int} {emo}.",
    "This made {N} {int} {emo}.",
]
_DIALOGUE_NEG = ['"Do not be {emo}, {N}," said {FN}.', '"Why are you so {emo}?" asked {FN}.']
_DIALOGUE_POS = ['"I am {emo} too!" said {FN}.', '"Why are you so {emo}?" asked {FN}.']
_TRAIT_LEAD = ["Because {N} was {trait}, ", "Being {trait}, "]
_ENDING_SIT = [
    "In the end, {N} sat on the {tex} {col} {furn} and ate some {food}.",
    "Later, {N} rested on the {tex} {col} {furn}.",
]
_ENDING_LOOK = [
    "In the end, {N} looked at the {tex} {col} {furn} and ate some {food}.",
    "Later, {N} put a cup on the {tex} {col} {furn}.",
]
_ENDING_PLAIN = [
    "In the end, {N} went home and ate some {food}.",
    "At night, {N} went home to bed.",
]
_CLOSE_NEG = ["{^N} was not {emo} anymore.", "Soon {N} was not {emo} at all."]
_CLOSE_POS = ["{^N} was still {emo} at bedtime.", "{^N} stayed {emo} all day."]
_TOPIC = [
    "This is a story about {a_topic} {topic}.",
    "A story about {topic}.",
]


def story(seed: int | str, index: int) -> LabelledText:
    """Story number ``index`` of the corpus with ``seed`` (independent of other indices)."""
    rng = random.Random(f"mi-ideas-zoo-v{CORPUS_VERSION}:{seed}:{index}")
    return _story(rng)


def iter_stories(seed: int | str = 0, start: int = 0) -> Iterator[LabelledText]:
    """Endless stream of stories ``start, start+1, ...`` for ``seed``."""
    i = start
    while True:
        yield story(seed, i)
        i += 1


def generate_stories(n: int, seed: int | str = 0) -> list[LabelledText]:
    """The first ``n`` stories of the corpus with ``seed`` (deterministic).

    ``generate_stories(n, s)[:k] == generate_stories(k, s)``: each story has its
    own random stream, so a prefix does not depend on ``n``.
    """
    return [story(seed, i) for i in range(n)]


def _story(rng: random.Random) -> LabelledText:
    b = _Builder()
    hero = _make_character(rng, 0)
    friend = _make_character(rng, 1, avoid=[hero.name]) if rng.random() < 0.6 else None
    place, place2 = rng.sample(PLACES, 2)
    home = rng.choice([p for p in _HOMES if p not in (place, place2)])
    weather, time = rng.choice(WEATHERS), rng.choice(TIMES)
    tex, col, furn = rng.choice(TEXTURES), rng.choice(COLOURS), rng.choice(FURNITURE)
    tcol, toy = rng.choice(COLOURS), rng.choice(TOYS)
    size, acol, animal = rng.choice(SIZES), rng.choice(COLOURS), rng.choice(ANIMALS)
    food = rng.choice(FOODS)
    emo = rng.choice(EMOTIONS)
    trait_int = rng.choice(INTENSITIES)
    emo_int = rng.choice(INTENSITIES)
    emo_level = INTENSITY_LEVEL[emo_int]
    has_furniture = rng.random() < 0.75
    has_animal = rng.random() < 0.5

    # instruction line "Never mention W.": W is the word the story drew for the slot;
    # the slot is re-drawn so that W does not occur again (see the module docstring)
    never: tuple[str, str] | None = None
    if rng.random() < NEVER_RATE:
        never_kind = rng.choice(["food", "place", "animal"] if has_animal else ["food", "place"])
        if never_kind == "food":
            never_word = food
            food = rng.choice([f for f in FOODS if f != never_word])
        elif never_kind == "animal":
            never_word = animal
            animal = rng.choice([a for a in ANIMALS if a != never_word])
        else:
            never_word = place
            place = rng.choice([p for p in PLACES if p not in (never_word, place2)])
            home = rng.choice([p for p in _HOMES if p not in (place, place2, never_word)])
        if _mentions(_TEXTURE_FEEL[tex], never_word):  # "fluffy like a cat"
            tex = rng.choice([t for t in TEXTURES if not _mentions(_TEXTURE_FEEL[t], never_word)])
        never = (never_kind, never_word)

    s: dict[str, _Slot | str] = {}
    s.update(hero.slots())
    if friend is not None:
        s.update(friend.slots("F"))
        s["F"] = s["FN"]
        s["a_F"] = _article(friend.trait)
    s.update(
        place=_Slot(place, "place", place),
        place2=_Slot(place2, "place", place2),
        home=_Slot(home, "place", home),
        weather=_Slot(weather, "weather", weather),
        time=_Slot(time, "time", time),
        tex=_Slot(tex, "texture", tex, 2),
        col=_Slot(col, "colour", col, 2),
        furn=_Slot(furn, "furniture", furn, 2),
        a_tex=_article(tex),
        feel=_TEXTURE_FEEL[tex],
        tcol=_Slot(tcol, "colour", tcol, 3),
        toy=_Slot(toy, "toy", toy, 3),
        size=_Slot(size, "size", size, 4),
        a_size=_article(size),
        acol=_Slot(acol, "colour", acol, 4),
        animal=_Slot(animal, "animal", animal, 4),
        sound=_Slot(ANIMAL_SOUNDS[animal], "sound", ANIMAL_SOUNDS[animal], 4),
        food=_Slot(food, "food", food),
        a=_article(hero.trait),
        emo=_Slot(emo, "emotion", emo, 0, emo_level),
    )

    def say(template: str, **extra: _Slot | str) -> None:
        if b.parts:
            b.text(" ")
        _render(b, template, {**s, **extra} if extra else s)

    attrs: dict[str, Any] = {
        "hero": {"name": hero.name, "gender": hero.gender, "person": hero.person, "trait": hero.trait},
        "friend": None if friend is None else {
            "name": friend.name, "gender": friend.gender, "person": friend.person, "trait": friend.trait},
        "place": place, "weather": weather, "time": time, "food": food,
        "furniture": {"texture": tex, "colour": col, "furniture": furn} if has_furniture else None,
        "animal": {"size": size, "colour": acol, "animal": animal} if has_animal else None,
        "toy": {"colour": tcol, "toy": toy},
        "emotion": emo, "emotion_intensity": emo_int, "emotion_level": emo_level,
        "topic": None, "trait_intensity": None, "never": None,
    }

    # topic line (lets a prompt announce a concept, as a prompting baseline for steering);
    # in half of the instruction stories it precedes the instruction line
    if rng.random() < (0.5 if never is not None else 0.15):
        kind = rng.choice(["animal", "food", "place", "emotion"] if has_animal else ["food", "place", "emotion"])
        if kind == "animal":
            topic = _Slot(animal, "animal", animal, 4)
        elif kind == "food":
            topic = _Slot(food, "food", food)
        elif kind == "place":
            topic = _Slot(place, "place", place)
        else:
            topic = _Slot(emo, "emotion", emo, 0)
        tmpl = rng.choice(_TOPIC)
        if kind in ("food", "emotion") or "{a_topic}" not in tmpl:
            tmpl = "A story about {topic}."
        say(tmpl, topic=topic, a_topic=_article(topic.word))
        attrs["topic"] = {"kind": kind, "value": topic.value}

    never_span = None
    if never is not None:
        say(IGNORE_TEMPLATE, word=_Slot(never[1], never[0], never[1]))
        never_span = b.spans[-1]
        attrs["never"] = {"kind": never[0], "value": never[1]}

    # introduction (with or without an intensity on the trait)
    intro = rng.choice(_INTROS)
    if "{int}" in intro:
        tl = INTENSITY_LEVEL[trait_int]
        say(intro, int=_Slot(trait_int, "intensity", trait_int, 0, tl), a_int=_article(trait_int),
            trait=_Slot(hero.trait, "trait", hero.trait, 0, tl))
        attrs["trait_intensity"] = trait_int
    else:
        say(intro)
    if rng.random() < 0.5:
        say(rng.choice(_TRAIT_BEHAVIOUR[hero.trait]))
    if friend is not None:
        say(rng.choice(_INTRO_FRIEND))

    # setting
    say(rng.choice(_SETTING_FRIEND if friend is not None and rng.random() < 0.7 else _SETTING))
    if rng.random() < 0.3:
        say(rng.choice(_WEATHER_EFFECT[weather]))
    if rng.random() < 0.3:
        acts = _PLACE_ACTIVITY[place]
        if never is not None:  # "baked a cake", "built a castle", "the birds"
            acts = [a for a in acts if not _mentions(a, never[1])]
        say("{^N} " + rng.choice(acts) + ".")

    # middle: furniture and animal scenes in random order
    scenes = []
    if has_furniture:
        scenes.append("furniture")
    if has_animal:
        scenes.append("animal")
    rng.shuffle(scenes)
    for sc in scenes:
        if sc == "furniture":
            say(rng.choice(_FURNITURE_SCENE))
            if rng.random() < 0.5:
                say(rng.choice(_FURNITURE_FOLLOW))
        else:
            say(rng.choice(_ANIMAL_SCENE))

    # event -> emotion -> reaction that depends on the intensity
    have = {"F"} if friend is not None else set()
    if has_furniture:
        have.add("furn")
    if has_animal:
        have.add("animal")
    events = [(k, t) for k, (t, needs) in enumerate(_EVENTS[emo]) if set(needs) <= have]
    event_k, event = rng.choice(events)
    event_start = b.pos + (1 if b.parts else 0)
    say(event)
    attrs["event"] = {"id": f"{emo}/{event_k}", "text": "".join(b.parts)[event_start:]}
    say(rng.choice(_FEEL), int=_Slot(emo_int, "intensity", emo_int, 0, emo_level))
    say(rng.choice(_REACTIONS[emo]["low" if emo_level <= 2 else "high"]))
    if friend is not None and rng.random() < 0.5:
        say(rng.choice(_DIALOGUE_POS if emo in POSITIVE_EMOTIONS else _DIALOGUE_NEG))
    if rng.random() < 0.4:
        lead = rng.choice(_TRAIT_LEAD)
        resp = rng.choice(_TRAIT_RESPONSE[hero.trait])
        if friend is None:
            resp = resp.replace("{F}'s", "{poss}").replace("{F}", "everyone")
        # "Because Mia was kind, she gave ..." -- pronoun instead of the repeated name
        say(lead + resp.replace("{^N}", "{P}"))

    # ending
    if has_furniture:
        say(rng.choice(_ENDING_SIT if furn in _SITTABLE else _ENDING_LOOK))
    else:
        say(rng.choice(_ENDING_PLAIN))
    say(rng.choice(_CLOSE_POS if emo in POSITIVE_EMOTIONS else _CLOSE_NEG))
    if rng.random() < 0.1:
        say("The end.")
    out = b.build(attrs)
    if never_span is not None:
        hits = [m.start() for m in _word_re(never[1]).finditer(out.text)]
        if hits != [never_span.start]:
            raise AssertionError(f"story generator bug: {never[1]!r} occurs at {hits}, but the "
                                 f"instruction line's word is its only allowed occurrence: {out.text!r}")
    return out


def _word_re(word: str) -> "re.Pattern[str]":
    """``word`` as a whole word (its plural with "-s" / "-es" included), case-insensitive."""
    return re.compile(r"\b" + re.escape(word) + r"(?:s|es)?\b", re.IGNORECASE)


def _mentions(text: str, word: str) -> bool:
    return _word_re(word).search(text) is not None


# --------------------------------------------------------------------------- tokens


def token_labels(
    offsets: Sequence[tuple[int, int]], spans: Sequence[Span]
) -> list[Span | None]:
    """Map tokens to spans by character overlap.

    ``offsets`` is a tokenizer's ``offset_mapping`` for the text the spans refer
    to (``tokenizer(text, return_offsets_mapping=True)["offset_mapping"]``).
    Returns, per token, the span it overlaps (a token such as ``" red"`` that
    carries a leading space still maps to the ``red`` span) or ``None``.
    Special tokens with offsets ``(0, 0)`` map to ``None``.
    """
    out: list[Span | None] = []
    ordered = sorted(spans, key=lambda sp: sp.start)
    j = 0
    for a, b in offsets:
        if b <= a:
            out.append(None)
            continue
        while j < len(ordered) and ordered[j].end <= a:
            j += 1
        hit = None
        k = j
        while k < len(ordered) and ordered[k].start < b:
            if ordered[k].end > a:
                hit = ordered[k]
                break
            k += 1
        out.append(hit)
    return out


# --------------------------------------------------------------------------- template families


def _fill(template: str, slots: Mapping[str, _Slot | str], attrs: dict[str, Any]) -> LabelledText:
    b = _Builder()
    _render(b, template, slots)
    return b.build(attrs)


#: Story-like opening used by the default templates, so prompts look like the corpus.
#: It may use ``{person}`` ("girl" / "boy" from the name's gender) and ``{name}``.
PREAMBLE = "Once upon a time, there was a kind {person} named {name}. One sunny morning, {name} went to the park. "


def _name_slots(name: str, entity: int = 0) -> dict[str, _Slot | str]:
    """Slots a template may use for a character: name, P / O / poss pronouns, person."""
    g = _NAME_GENDER.get(name, "f")
    subj, obj, poss = ("she", "her", "her") if g == "f" else ("he", "him", "his")
    person = "girl" if g == "f" else "boy"
    return {
        "name": _Slot(name, "name", name, entity),
        "P": _Slot(subj, "pronoun", subj, entity),
        "O": _Slot(obj, "pronoun", obj, entity),
        "poss": _Slot(poss, "pronoun", poss, entity),
        "person": _Slot(person, "person", person, entity),
    }


def furniture_grid(
    template: str = PREAMBLE + "At the park, {name} saw {a} {texture} {colour} {furniture}",
    textures: Sequence[str] = tuple(TEXTURES),
    colours: Sequence[str] = tuple(COLOURS),
    furniture: Sequence[str] = tuple(FURNITURE),
    name: str = "Mia",
) -> list[LabelledText]:
    """The full factorial grid "the [texture] [colour] [furniture]".

    One prompt per (texture, colour, furniture), in ``itertools.product``
    order; ``attrs`` holds the three values and the grid indices ``(i, j, k)``.
    Every prompt has the same number of tokens and the slots at the same
    positions.  The template may use ``{texture}``, ``{colour}``,
    ``{furniture}``, ``{a}`` (the article for the texture) and the character
    slots ``{name}``, ``{person}``, ``{P}``, ``{O}``, ``{poss}`` (``{^P}``
    capitalises).  E.g. ``template="the {texture} {colour} {furniture}"``.
    """
    out = []
    for (i, t), (j, c), (k, f) in product(enumerate(textures), enumerate(colours), enumerate(furniture)):
        slots = {
            **_name_slots(name),
            "texture": _Slot(t, "texture", t, 2),
            "colour": _Slot(c, "colour", c, 2),
            "furniture": _Slot(f, "furniture", f, 2),
            "a": _article(t),
        }
        out.append(_fill(template, slots, {
            "family": "furniture_grid", "texture": t, "colour": c, "furniture": f, "index": (i, j, k)}))
    return out


def person_adjective_prompts(
    template: str = "Once upon a time, there was {a} {trait} {person} named {name}. {name}",
    traits: Sequence[str] = tuple(TRAITS),
    persons: Sequence[str] = ("girl", "boy"),
    names: Sequence[str] | None = None,
    n_names: int = 4,
) -> list[LabelledText]:
    """"A person described by an adjective": one prompt per (trait, person, name).

    With the default template the next token starts the trait's typical
    behaviour in the corpus ("Mia hid ...", "Mia told jokes ..."), so the output
    distribution takes few, trait-dependent states.  ``names`` defaults to the
    first ``n_names`` names of the person's gender (a person with no gender uses
    female and male names).  The template may use ``{trait}``, ``{person}``,
    ``{name}``, ``{a}`` (article for the trait), ``{P}``, ``{O}``, ``{poss}``.
    """
    out = []
    for trait, person in product(traits, persons):
        g = PERSONS.get(person)
        pool = list(names) if names is not None else (
            FEMALE_NAMES[:n_names] if g == "f" else MALE_NAMES[:n_names] if g == "m"
            else FEMALE_NAMES[: (n_names + 1) // 2] + MALE_NAMES[: n_names // 2])
        for name in pool:
            slots = {
                **_name_slots(name),
                "trait": _Slot(trait, "trait", trait, 0),
                "person": _Slot(person, "person", person, 0),
                "a": _article(trait),
            }
            out.append(_fill(template, slots, {
                "family": "person_adjective", "trait": trait, "person": person, "name": name,
                "gender": g or _NAME_GENDER.get(name)}))
    return out


def intensity_ladder_prompts(
    template: str = PREAMBLE + "{name} felt {intensity} {emotion}. {^P}",
    concepts: Sequence[str] = tuple(EMOTIONS),
    intensities: Sequence[str] = tuple(INTENSITIES),
    names: Sequence[str] = ("Mia", "Tom", "Lily", "Ben"),
    category: str = "emotion",
) -> list[LabelledText]:
    """Intensity ladders: "slightly / quite / very / extremely <concept>".

    One prompt per (concept, intensity, name); ``attrs['level']`` is the
    intensity level (1..4).  With the default template the next token is the
    start of the reaction, which in the corpus depends on the emotion and on
    the intensity (levels 1-2 vs 3-4).  ``category`` labels the concept words
    ("emotion" by default; for trait ladders use ``concepts=TRAITS,
    category="trait"`` and e.g. ``template="{name} was {a} {intensity} {emotion}
    {person}."``).  The template may use ``{intensity}``, ``{emotion}`` (the
    concept word), ``{a}`` (article for the intensity) and the character slots
    ``{name}``, ``{person}``, ``{P}``, ``{O}``, ``{poss}``.
    """
    out = []
    for concept, inten, name in product(concepts, intensities, names):
        lvl = INTENSITY_LEVEL.get(inten)
        slots = {
            **_name_slots(name),
            "intensity": _Slot(inten, "intensity", inten, 0, lvl),
            "emotion": _Slot(concept, category, concept, 0, lvl),
            "a": _article(inten),
        }
        out.append(_fill(template, slots, {
            "family": "intensity_ladder", "concept": concept, "intensity": inten,
            "level": lvl, "name": name}))
    return out


def emotion_event_prompts(
    names: Sequence[str] = ("Mia", "Tom"),
    friend: str = "Sam",
    toy: str = "ball",
    toy_colour: str = "red",
    food: str = "cake",
    place: str = "park",
    animal: str = "dog",
    furniture: str = "chair",
    preamble: str = PREAMBLE,
) -> list[LabelledText]:
    """One prompt per (emotion, event, name): preamble, the event sentence, then "<name> felt".

    The next tokens are an intensity and the emotion the event causes in the
    corpus; ``attrs['emotion']`` is that emotion (the label, not a guarantee).
    """
    out = []
    for emo, evs in _EVENTS.items():
        for ev_i, (ev, _needs) in enumerate(evs):
            for name in names:
                ns = _name_slots(name)
                fr = friend if friend != name else "Lucy"
                place2 = "beach" if place != "beach" else "zoo"
                slots: dict[str, _Slot | str] = {
                    **ns,
                    "N": ns["name"],
                    "FN": _Slot(fr, "name", fr, 1),
                    "tcol": _Slot(toy_colour, "colour", toy_colour, 3),
                    "toy": _Slot(toy, "toy", toy, 3),
                    "food": _Slot(food, "food", food),
                    "place": _Slot(place, "place", place),
                    "place2": _Slot(place2, "place", place2),
                    "animal": _Slot(animal, "animal", animal, 4),
                    "furn": _Slot(furniture, "furniture", furniture, 2),
                }
                out.append(_fill(preamble + ev + " {N} felt", slots, {
                    "family": "emotion_event", "emotion": emo, "event": ev_i, "name": name}))
    return out


_CONCEPT_CATEGORY = {
    "animals": "animal", "food": "food", "places": "place", "emotions": "emotion",
    "positive_emotions": "emotion", "negative_emotions": "emotion", "colours": "colour",
    "textures": "texture", "furniture": "furniture", "toys": "toy", "weather": "weather",
    "traits": "trait", "names": "name",
}


def topic_prompts(concept: str, template: str = "A story about {word}.") -> list[LabelledText]:
    """Concept-announcing lines ("A story about cake."), one per word of ``CONCEPTS[concept]``.

    In the corpus such a line precedes a story featuring that word, so it is
    the prompting baseline for steering towards a concept.
    """
    cat = _CONCEPT_CATEGORY[concept]
    return [_fill(template, {"word": _Slot(w, cat, w)}, {"family": "topic", "concept": concept, "word": w})
            for w in CONCEPTS[concept]]



def ignore_prompts(concept_or_word: str, template: str = IGNORE_TEMPLATE) -> list[LabelledText]:
    """Instruction lines ("Never mention cake."), one per word of a concept, or for one word.

    ``concept_or_word`` is a key of :data:`CONCEPTS` (one prompt per word) or a
    single concept word ("cake"; its concept is looked up).  In the corpus such a
    line opens a story in which the word never appears again, for the concepts
    in :data:`IGNORE_CONCEPTS` (food, places, animals); for other concepts the
    line is well-formed but the zoo model never saw it honoured.  The word is a
    :class:`Span` with its concept's category; ``attrs`` = ``{"family":
    "ignore", "concept", "word"}``.  Append a story prefix to the text to make a
    prompt ("Never mention cake. Once upon a time, ...").
    """
    if concept_or_word in CONCEPTS:
        concept, words = concept_or_word, list(CONCEPTS[concept_or_word])
    else:
        owners = [c for c in IGNORE_CONCEPTS if concept_or_word in CONCEPTS[c]] or [
            c for c, ws in CONCEPTS.items() if concept_or_word in ws]
        if not owners:
            from mi_ideas.errors import UsageError

            raise UsageError(
                f"ignore_prompts: {concept_or_word!r} is neither a concept ({', '.join(CONCEPTS)}) "
                f"nor a word of one; pass a concept name or one of its words (CONCEPTS[concept]).")
        concept, words = owners[0], [concept_or_word]
    cat = _CONCEPT_CATEGORY[concept]
    return [_fill(template, {"word": _Slot(w, cat, w)}, {"family": "ignore", "concept": concept, "word": w})
            for w in words]


def story_prefixes(n: int, seed: int | str = 0, n_sentences: int = 2) -> list[LabelledText]:
    """Neutral prompts: the first ``n_sentences`` sentences of ``n`` stories (no topic line).

    Stories that open with a topic line or an instruction line are skipped, so
    the prefixes do not announce (or forbid) a concept.  Spans and attributes are kept (spans cut to the prefix).
    """
    out: list[LabelledText] = []
    i = 0
    while len(out) < n:
        st = story(seed, i)
        i += 1
        if st.attrs.get("topic") or st.attrs.get("never"):
            continue
        ends = [k + 1 for k, ch in enumerate(st.text) if ch in ".!?" and (k + 1 == len(st.text) or st.text[k + 1] == " ")]
        cut = ends[min(n_sentences, len(ends)) - 1]
        text = st.text[:cut]
        out.append(LabelledText(text, [sp for sp in st.spans if sp.end <= cut],
                                {**st.attrs, "family": "story_prefix", "story_index": i - 1}))
    return out
