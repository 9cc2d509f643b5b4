"""Friendly, hostname-safe `adjective-noun` names that never collide with existing VMs."""

from __future__ import annotations

import random
from collections.abc import Container

ADJECTIVES = (
    "able", "amber", "ancient", "bold", "brave", "breezy", "bright", "brisk", "calm", "clever",
    "cosmic", "crisp", "curious", "dapper", "daring", "eager", "early", "fancy", "fast",
    "fearless", "fluffy", "frosty", "gentle", "giddy", "glad", "golden", "grand", "happy",
    "hardy", "hazy", "honest", "humble", "icy", "jolly", "keen", "kind", "lively", "lucky",
    "merry", "mighty", "misty", "modest", "nimble", "noble", "odd", "patient", "plucky",
    "polite", "proud", "quick", "quiet", "rapid", "rosy", "rustic", "shiny", "silent", "silly",
    "sleek", "smooth", "snappy", "snowy", "solid", "spry", "steady", "stormy", "sunny", "swift",
    "tidy", "tiny", "tough", "trusty", "vivid", "warm", "wild", "wise", "witty", "zesty",
)

NOUNS = (
    "badger", "beacon", "bear", "beaver", "bison", "boulder", "breeze", "brook", "canyon",
    "cedar", "cheetah", "comet", "condor", "coral", "crane", "cricket", "dingo", "dolphin",
    "eagle", "falcon", "ferret", "finch", "fjord", "fox", "gecko", "glacier", "harbor", "hawk",
    "heron", "ibis", "jaguar", "koala", "lagoon", "lark", "lemur", "lynx", "maple", "marmot",
    "meadow", "mole", "moose", "newt", "ocelot", "orca", "osprey", "otter", "owl", "panda",
    "pebble", "pelican", "penguin", "pine", "plover", "puffin", "quail", "raven", "reef",
    "robin", "salmon", "sparrow", "spruce", "squid", "stork", "swan", "tapir", "tern", "tiger",
    "toucan", "trout", "tundra", "walrus", "willow", "wombat", "wren", "yak", "zebra",
)


def generate(existing: Container[str], rng: random.Random | None = None) -> str:
    """A random name not in `existing`; falls back to a numeric suffix when the space is crowded."""
    rng = rng or random.Random()
    for _ in range(64):
        name = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
        if name not in existing:
            return name
    base = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}"
    n = 2
    while f"{base}-{n}" in existing:
        n += 1
    return f"{base}-{n}"
