"""The inspect wing: what a model does as it reads a text (surprisal, cells, gates, look-back), as one page."""
