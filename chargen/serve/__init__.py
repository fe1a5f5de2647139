"""The serving wing: the HTTP app (OpenAI-shaped completions, sessions, scoring), its engine and its page."""
