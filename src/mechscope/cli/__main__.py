"""``python -m mechscope.cli``: the same commands as the ``mechscope`` script (useful where the script is not on
PATH, e.g. a venv that is not activated)."""

from . import app

app()
