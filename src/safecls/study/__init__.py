"""The study: the paper's tables at SmolLM2 scale for the shipped model and its baselines, written as run folders
under study/ and turned into docs/RESULTS.md by `safecls study report`. The top room: it runs models, attacks and
evaluations, and reads all of them."""
