"""How the book presents results: one table formatter, the parameters table, exercise solutions,
and the checks of the built pages."""
