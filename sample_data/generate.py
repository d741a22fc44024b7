"""Write the sample inputs the example jobs in ``jobs/`` read.

Deterministic (seeded) and offline: ``python3 sample_data/generate.py`` rewrites
``corpus.csv`` (300 documents, mostly English), ``reviews.parquet`` (300 clearly positive or
negative product reviews), ``phrases.csv`` (50 phrases with per-row languages) and
``products.csv`` (24 products to draw, each with a seed).
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SEED = 20240611

SUBJECTS = [
    ("Solar panels", "energy"),
    ("Sourdough bread", "cooking"),
    ("City libraries", "community"),
    ("Electric bikes", "transport"),
    ("Urban beekeeping", "nature"),
    ("Remote work", "work"),
    ("Night trains", "travel"),
    ("Python type hints", "software"),
    ("Coral reefs", "science"),
    ("Public parks", "community"),
    ("Home composting", "nature"),
    ("Mechanical keyboards", "technology"),
    ("Trail running", "sport"),
    ("Vinyl records", "music"),
    ("Container gardening", "nature"),
    ("Heat pumps", "energy"),
    ("Open-source maintainers", "software"),
    ("Tide pools", "science"),
    ("Board game cafés", "leisure"),
    ("Cold-water swimming", "sport"),
]
TITLE_FORMS = [
    "A beginner's guide to {s}",
    "{S}: what nobody tells you",
    "Why {s} matter more than ever",
    "Five lessons from a year of {s}",
    "{S} in practice",
    "Notes on {s}",
    "The quiet rise of {s}",
    "How {s} changed our town",
]
OPENERS = [
    "{S} have become a common topic of conversation in {topic} circles.",
    "Most people first hear about {s} from a friend or a neighbour.",
    "Interest in {s} has grown steadily over the last decade.",
    "Ask ten experts about {s} and you will get eleven opinions.",
    "Our reporter spent a month looking closely at {s}.",
]
MIDDLES = [
    "The costs are lower than many expect, but the learning curve is real.",
    "Local groups meet every second Tuesday to share tips and mistakes.",
    "Critics point out that the benefits depend heavily on the climate.",
    "A small survey found that 68% of newcomers stuck with it after a year.",
    "The first month is the hardest; after that, habits take over.",
    "Supporters say it saves money, time and, occasionally, sanity.",
    "The research is still young, and results vary from study to study.",
    "Good equipment helps, yet patience matters more than any gadget.",
    'One organiser put it simply: "start small, then keep going."',
    "Schools have started to include it in after-school programmes.",
]
CLOSERS = [
    "Whether it lasts is an open question.",
    "For now, the waiting lists keep getting longer.",
    "The next public workshop is planned for early spring.",
    "Readers can find a short reading list at the end of this article.",
    "It is, in the end, a very human story.",
]
# (lang, title, text) written by hand so the non-English rows read naturally.
FOREIGN = [
    ("fr", "Le pain au levain", "Le levain demande de la patience, mais le goût en vaut la peine."),
    ("fr", "Vélos électriques en ville", "De plus en plus de Parisiens vont au travail à vélo."),
    ("fr", "La bibliothèque du quartier", "La bibliothèque ouvre désormais le dimanche matin."),
    ("de", "Wärmepumpen im Altbau", "Eine Wärmepumpe lohnt sich auch in älteren Häusern."),
    ("de", "Nachtzug nach Wien", "Der Nachtzug ist langsamer, aber man kommt ausgeruht an."),
    ("de", "Gärtnern auf dem Balkon", "Tomaten wachsen erstaunlich gut in großen Kübeln."),
    ("es", "Paneles solares", "Los paneles solares se amortizan en unos ocho años."),
    ("es", "Correr por la montaña", "Correr por senderos exige fuerza, técnica y buen calzado."),
    ("es", "Cafés de juegos de mesa", "Los cafés de juegos reúnen a vecinos de todas las edades."),
    ("ja", "都市の養蜂", "屋上で蜂を飼う人が東京で増えています。"),
    ("ja", "リモートワーク", "在宅勤務は通勤時間をなくしますが、孤独を感じる人もいます。"),
    ("ja", "レコードの魅力", "レコードの音は温かいと言うファンが多いです。"),
    (
        "it",
        "Il compostaggio domestico",
        "Con un piccolo composter si riducono i rifiuti di un terzo.",
    ),
    ("it", "Nuotare in acqua fredda", "Nuotare in acqua fredda richiede gradualità e prudenza."),
    ("pt", "Recifes de coral", "Os recifes de coral abrigam um quarto das espécies marinhas."),
    ("pt", "Parques públicos", "Os parques públicos melhoram a saúde de quem vive perto."),
    ("nl", "Elektrische fietsen", "De elektrische fiets is in Nederland niet meer weg te denken."),
    ("zh", "太阳能板", "屋顶太阳能板在晴朗的城市里回本更快。"),
    ("ko", "보드게임 카페", "보드게임 카페는 주말마다 사람들로 붐빈다."),
    ("sv", "Kallbad", "Kallbad på vintern har blivit populärt i Stockholm."),
]

PRODUCTS = [
    "wireless earbuds",
    "coffee grinder",
    "hiking backpack",
    "desk lamp",
    "air fryer",
    "phone case",
    "electric kettle",
    "running shoes",
    "bluetooth speaker",
    "office chair",
    "water bottle",
    "robot vacuum",
]
POSITIVE = [
    "Absolutely love this {p}. It works perfectly and looks great.",
    "Best {p} I have ever owned, worth every penny.",
    "The {p} arrived early and the quality is excellent. Highly recommend!",
    "Fantastic {p}: sturdy, quiet and easy to use. Five stars.",
    "I was sceptical, but this {p} exceeded my expectations. Brilliant.",
    "Great value. The {p} does exactly what it promises and more.",
    "My whole family is delighted with the {p}. Would buy again.",
]
NEGATIVE = [
    "Terrible {p}. It broke after two days and support never replied.",
    "Do not buy this {p}. Cheap plastic and it stopped working within a week.",
    "The {p} arrived damaged and the replacement was just as bad. Awful.",
    "Very disappointed with the {p}: loud, flimsy and a waste of money.",
    "Worst {p} I have owned. Returned it immediately.",
    "The {p} looks nice in photos but is useless in practice. Avoid.",
    "Completely unreliable {p}. I regret this purchase.",
]
PHRASES = {
    "en": [
        "Good morning, how are you?",
        "Where is the nearest train station?",
        "The meeting has been moved to Thursday.",
        "Please keep your ticket until the end of the journey.",
        "Thank you for your order; it will ship tomorrow.",
        "Could you speak a little more slowly?",
        "The museum is closed on Mondays.",
        "I would like a table for two, please.",
        "Your password must contain at least twelve characters.",
        "Turn left at the bakery and walk for five minutes.",
        "The library opens at nine in the morning.",
        "We are sorry for the delay.",
        "Is breakfast included in the price?",
        "The invoice is attached to this email.",
        "Please restart the device and try again.",
    ],
    "fr": [
        "Bonjour, je voudrais réserver une chambre.",
        "Le train pour Lyon part à quinze heures.",
        "Merci beaucoup pour votre aide.",
        "Où se trouve la pharmacie la plus proche ?",
        "La réunion est reportée à la semaine prochaine.",
    ],
    "de": [
        "Wie viel kostet eine Fahrkarte nach Berlin?",
        "Das Geschäft schließt um acht Uhr.",
        "Können Sie mir bitte helfen?",
        "Ich habe meinen Schlüssel verloren.",
        "Die Lieferung kommt morgen an.",
    ],
    "es": [
        "¿A qué hora abre el mercado?",
        "Muchas gracias por la invitación.",
        "El vuelo tiene un retraso de una hora.",
        "Necesito cambiar mi reserva.",
        "La cuenta, por favor.",
    ],
}
TARGETS = ["fr", "de", "es", "it", "ja", "pt", "nl", "en"]


def _corpus(rng: random.Random) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for i in range(1, 301):
        if i % 10 == 7:
            lang, title, text = FOREIGN[(i // 10) % len(FOREIGN)]
        else:
            subject, topic = rng.choice(SUBJECTS)
            # Keep proper nouns capitalised mid-sentence.
            lower = subject if subject.startswith("Python") else subject.lower()
            fill = {"s": lower, "S": subject, "topic": topic}
            title = rng.choice(TITLE_FORMS).format(**fill)
            title = title[0].upper() + title[1:]
            sentences = [rng.choice(OPENERS), *rng.sample(MIDDLES, 2), rng.choice(CLOSERS)]
            # Every 25th document has two paragraphs: a newline inside a quoted field.
            sep = "\n" if i % 25 == 0 else " "
            text = sep.join(s.format(**fill) for s in sentences)
            lang = "en"
        rows.append({"doc_id": f"doc-{i:04d}", "title": title, "text": text, "lang": lang})
    return rows


def _reviews(rng: random.Random) -> dict[str, list[object]]:
    ids, texts, stars = [], [], []
    for i in range(1, 301):
        product = rng.choice(PRODUCTS)
        positive = rng.random() < 0.55
        text = rng.choice(POSITIVE if positive else NEGATIVE).format(p=product)
        ids.append(f"r{i:05d}")
        texts.append(text)
        stars.append(rng.choice([4, 5]) if positive else rng.choice([1, 2]))
    return {"review_id": ids, "text": texts, "stars": stars}


def _phrases(rng: random.Random) -> list[dict[str, str]]:
    pool = [(lang, text) for lang, texts in PHRASES.items() for text in texts]
    rows = []
    for i in range(1, 51):
        lang, text = pool[(i - 1) % len(pool)]
        target = rng.choice([t for t in TARGETS if t != lang])
        rows.append({"id": str(i), "text": text, "source_lang": lang, "target_lang": target})
    return rows


PRODUCTS = [
    "armchair",
    "desk lamp",
    "kettle",
    "wall clock",
    "flower vase",
    "coffee mug",
    "backpack",
    "sneaker",
    "teapot",
    "bookshelf",
    "floor lamp",
    "water bottle",
]
MATERIALS = ["oak", "brushed steel", "ceramic", "recycled plastic", "walnut", "linen"]
COLOURS = ["sage green", "terracotta", "navy blue", "mustard yellow", "charcoal", "ivory"]


def _products(rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for i in range(1, 25):
        rows.append(
            {
                "sku": f"sku-{i:03d}",
                "product": PRODUCTS[(i - 1) % len(PRODUCTS)],
                "material": rng.choice(MATERIALS),
                "colour": rng.choice(COLOURS),
                "seed": str(rng.randrange(1, 2**31)),
            }
        )
    return rows


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    """Write the four files next to this script."""
    rng = random.Random(SEED)
    _write_csv(HERE / "corpus.csv", _corpus(rng))
    reviews = pa.table(
        _reviews(rng),
        schema=pa.schema([("review_id", pa.string()), ("text", pa.string()), ("stars", pa.int8())]),
    )
    pq.write_table(reviews, HERE / "reviews.parquet", compression="zstd")
    _write_csv(HERE / "phrases.csv", _phrases(rng))
    # its own sequence, so the files above stay as they were before it was added
    _write_csv(HERE / "products.csv", _products(random.Random(SEED + 1)))


if __name__ == "__main__":
    main()
