"""A seeded, procedurally generated corpus of fictional encyclopedia articles.

Owns the fact graph (people, cities, countries, companies and the relations
between them), the article text written from it, and the multi-hop questions
asked over it. Everything is a pure function of (seed, num_entities); nothing
is downloaded or stored. It knows nothing about search, tools or rewards.

Each relation is stated in one article only, on the side it points from
(a company's article names its founder, a person's names their birth city, a
city's names its country, a country's names its currency and language), so a
chain of `hops` relations needs `hops` articles. A question is kept only when
no single article names both its subject and its answer.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from functools import lru_cache

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr")
ONSETS += ("st", "tr", "h", "j", "w", "kr", "gr")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
CODAS = ("", "", "", "n", "r", "l", "s", "m", "k")
OCCUPATIONS = ("clockmaker", "botanist", "cartographer", "architect", "composer", "engineer")
OCCUPATIONS += ("chemist", "painter", "astronomer", "shipwright", "physician", "poet")
ACHIEVEMENTS = ("a survey of tidal currents", "a treatise on glass lenses", "a cycle of songs")
ACHIEVEMENTS += ("a bridge of unusual design", "a catalogue of comets", "a method of dyeing")
FEATURES = ("old harbour", "stone bridges", "spring fair", "observatory", "salt markets")
FEATURES += ("textile mills", "cathedral", "botanical garden", "lighthouse", "canals")
INDUSTRIES = ("shipping", "textile", "mining", "publishing", "optics", "brewing", "railway")
INDUSTRIES += ("insurance", "pharmaceutical", "glassworks")
COMPANY_SUFFIXES = ("Works", "Company", "Holdings", "Brothers", "Industries", "Trading")
REGIONS = ("northern highlands", "eastern lowlands", "southern archipelago", "western steppe")
EXPORTS = ("timber", "wool", "copper", "salt", "amber", "tea", "tin", "barley")
LANGUAGE_SUFFIXES = ("ese", "ish", "ic", "ian")
_SENTENCE_WORDS = (
    "was a remembered for born in as an adult settled corresponded many years with died is city "
    "known its capital of river runs through has about inhabitants twinned country the currency "
    "most people speak borders chief export company founded by headquarters are main competitor "
    "employs"
)
_WORD = re.compile(r"[a-z0-9]+")
_Kinds = dict[str, list[str]]
"""Titles by entity kind."""
_Article = tuple[str, list[str]]
"""An article's lede and its other sentences (shuffled before writing)."""


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    gold_titles: tuple[str, ...]
    """The articles on the reasoning path, in the order they must be read."""
    template: str

    @property
    def hops(self) -> int:
        return len(self.gold_titles)


@dataclass(frozen=True)
class Template:
    name: str
    subject_kind: str
    relations: tuple[str, ...]
    form: str


TEMPLATES = (
    Template("birth_country", "person", ("born_in", "country"), "In which country was {} born?"),
    Template(
        "founder_birth_city",
        "company",
        ("founder", "born_in"),
        "In which city was the founder of {} born?",
    ),
    Template("hq_country", "company", ("hq", "country"), "In which country is {} headquartered?"),
    Template(
        "city_currency",
        "city",
        ("country", "currency"),
        "What currency is used in the country where {} lies?",
    ),
    Template(
        "city_language",
        "city",
        ("country", "language"),
        "What language do most people speak in the country where {} lies?",
    ),
    Template(
        "founder_birth_country",
        "company",
        ("founder", "born_in", "country"),
        "In which country was the founder of {} born?",
    ),
    Template(
        "birth_currency",
        "person",
        ("born_in", "country", "currency"),
        "What is the currency of the country where {} was born?",
    ),
    Template(
        "birth_language",
        "person",
        ("born_in", "country", "language"),
        "What language do most people speak in the country where {} was born?",
    ),
    Template(
        "hq_currency",
        "company",
        ("hq", "country", "currency"),
        "What currency is used in the country where {} has its headquarters?",
    ),
)


@dataclass
class Entity:
    kind: str
    title: str
    facts: dict[str, str] = field(default_factory=dict)
    mentions: set[str] = field(default_factory=set)
    """Titles and values this entity's article names (its own title included)."""


@dataclass
class Corpus:
    seed: int
    documents: tuple[Document, ...]
    questions: tuple[Question, ...]

    def __post_init__(self) -> None:
        self.by_id = {doc.id: doc for doc in self.documents}
        self.by_title = {doc.title.lower(): doc for doc in self.documents}

    def lookup(self, key: str) -> Document | None:
        """A document by id or by title (case-insensitive)."""
        key = key.strip()
        return self.by_id.get(key) or self.by_title.get(key.lower())

    def questions_with(self, hops: int) -> tuple[Question, ...]:
        return tuple(q for q in self.questions if q.hops == hops)


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens (the search index uses the same)."""
    return _WORD.findall(text.lower())


@lru_cache(maxsize=8)
def build_corpus(seed: int = 0, num_entities: int = 240) -> Corpus:
    """The corpus for `seed`: about `num_entities` articles and their questions.

    Cached, so every env built with the same arguments shares one (read-only) corpus."""
    if num_entities < 24:
        raise ValueError("num_entities must be at least 24")
    rng = random.Random(seed)
    names = _NameMaker(rng)
    entities = _make_entities(rng, names, num_entities)
    documents = _write_documents(rng, entities)
    questions = _make_questions(entities)
    return Corpus(seed=seed, documents=documents, questions=questions)


class _NameMaker:
    """Unique invented words: no two names share a token and none is a word of the
    article templates, so search can tell every entity apart."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        constants = OCCUPATIONS + ACHIEVEMENTS + FEATURES + INDUSTRIES + COMPANY_SUFFIXES
        constants += REGIONS + EXPORTS + (_SENTENCE_WORDS,)
        self.used: set[str] = set(tokenize(" ".join(constants)))

    def word(
        self, min_syllables: int = 2, max_syllables: int = 2, suffixes: tuple[str, ...] = ("",)
    ) -> str:
        while True:
            count = self.rng.randint(min_syllables, max_syllables)
            word = "".join(
                self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + self.rng.choice(CODAS)
                for _ in range(count)
            )
            word += self.rng.choice(suffixes)
            if 4 <= len(word) <= 12 and word not in self.used:
                self.used.add(word)
                return word


def _make_entities(rng: random.Random, names: _NameMaker, total: int) -> dict[str, Entity]:
    n_countries = max(4, total // 16)
    n_cities = max(2 * n_countries, total // 4)
    n_companies = max(4, total // 4)
    n_people = total - n_countries - n_cities - n_companies
    countries = [Entity("country", names.word().capitalize()) for _ in range(n_countries)]
    for country in countries:
        country.facts["currency"] = names.word()
        country.facts["language"] = names.word(1, 2, LANGUAGE_SUFFIXES).capitalize()
    cities = [Entity("city", names.word().capitalize()) for _ in range(n_cities)]
    for i, city in enumerate(cities):  # the first city of each country is its capital
        city.facts["country"] = countries[i % n_countries].title
        if i < n_countries:
            city.facts["capital_of"] = countries[i].title
    rng.shuffle(cities)
    people = [
        Entity("person", f"{names.word().capitalize()} {names.word().capitalize()}")
        for _ in range(n_people)
    ]
    for person in people:
        person.facts["born_in"], person.facts["moved_to"] = (c.title for c in rng.sample(cities, 2))
    companies = [
        Entity("company", f"{names.word().capitalize()} {rng.choice(COMPANY_SUFFIXES)}")
        for _ in range(n_companies)
    ]
    for company in companies:
        company.facts["founder"] = rng.choice(people).title
        company.facts["hq"] = rng.choice(cities).title
    everything = countries + cities + people + companies
    return {entity.title: entity for entity in everything}


def _write_documents(rng: random.Random, entities: dict[str, Entity]) -> tuple[Document, ...]:
    by_kind: _Kinds = {}
    for entity in entities.values():
        by_kind.setdefault(entity.kind, []).append(entity.title)
    writers = {
        "person": _person_text,
        "city": _city_text,
        "country": _country_text,
        "company": _company_text,
    }
    order = list(entities.values())
    rng.shuffle(order)  # ids say nothing about an article's kind
    documents = []
    for i, entity in enumerate(order):
        lede, facts = writers[entity.kind](rng, entity, by_kind)
        rng.shuffle(facts)
        entity.mentions.add(entity.title)
        documents.append(Document(f"doc{i:04d}", entity.title, " ".join([lede, *facts])))
    return tuple(documents)


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _other(rng: random.Random, pool: list[str], *exclude: str) -> str:
    while True:
        pick = rng.choice(pool)
        if pick not in exclude:
            return pick


def _person_text(rng: random.Random, e: Entity, kinds: _Kinds) -> _Article:
    surname = e.title.split()[-1]
    born = rng.randint(1780, 1930)
    friend = _other(rng, kinds["person"], e.title)
    e.mentions |= {e.facts["born_in"], e.facts["moved_to"], friend}
    job, feat = rng.choice(OCCUPATIONS), rng.choice(ACHIEVEMENTS)
    lede = f"{e.title} was {_a(job)} {job} remembered for {feat}."
    return lede, [
        f"{surname} was born in {e.facts['born_in']} in {born}.",
        f"As an adult {surname} settled in {e.facts['moved_to']}.",
        f"{surname} corresponded for many years with {friend}.",
        f"{surname} died in {born + rng.randint(40, 90)}.",
    ]


def _city_text(rng: random.Random, e: Entity, kinds: _Kinds) -> _Article:
    river = rng.choice(ONSETS).capitalize() + rng.choice(VOWELS) + "r"  # one syllable: no name
    twin = _other(rng, kinds["city"], e.title)
    e.mentions |= {e.facts["country"], twin}
    where = "is the capital of" if "capital_of" in e.facts else "is a city in"
    lede = f"{e.title} is a city known for its {rng.choice(FEATURES)}."
    return lede, [
        f"{e.title} {where} {e.facts['country']}.",
        f"The {river} river runs through {e.title}.",
        f"{e.title} has about {rng.randint(8, 900) * 1000} inhabitants.",
        f"{e.title} is twinned with {twin}.",
    ]


def _country_text(rng: random.Random, e: Entity, kinds: _Kinds) -> _Article:
    neighbour = _other(rng, kinds["country"], e.title)
    e.mentions |= {e.facts["currency"], e.facts["language"], neighbour}
    lede = f"{e.title} is a country in the {rng.choice(REGIONS)}."
    return lede, [
        f"The currency of {e.title} is the {e.facts['currency']}.",
        f"Most people in {e.title} speak {e.facts['language']}.",
        f"{e.title} borders {neighbour}.",
        f"The chief export of {e.title} is {rng.choice(EXPORTS)}.",
    ]


def _company_text(rng: random.Random, e: Entity, kinds: _Kinds) -> _Article:
    rival = _other(rng, kinds["company"], e.title)
    e.mentions |= {e.facts["founder"], e.facts["hq"], rival}
    industry = rng.choice(INDUSTRIES)
    lede = f"{e.title} is {_a(industry)} {industry} company."
    return lede, [
        f"{e.title} was founded in {rng.randint(1820, 1990)} by {e.facts['founder']}.",
        f"The headquarters of {e.title} are in {e.facts['hq']}.",
        f"Its main competitor is {rival}.",
        f"{e.title} employs about {rng.randint(2, 400) * 50} people.",
    ]


def _make_questions(entities: dict[str, Entity]) -> tuple[Question, ...]:
    questions = []
    for template in TEMPLATES:
        for subject in entities.values():
            if subject.kind != template.subject_kind:
                continue
            path, value = [subject.title], subject.title
            for relation in template.relations:
                value = entities[value].facts[relation]
                path.append(value)
            answer, gold = path[-1], tuple(path[:-1])
            if any(subject.title in e.mentions and answer in e.mentions for e in entities.values()):
                continue  # one article would answer it: not multi-hop
            questions.append(
                Question(template.form.format(subject.title), answer, gold, template.name)
            )
    return tuple(questions)
