"""The chat wing: a conversation as a tree of turns with their hidden states, and the REPL that drives it."""
