"""The per-run HTML report: :func:`adrank.report.run.write_report` writes one self-contained page.

``run`` orchestrates; ``page`` turns figures into HTML (pure), from ``headline`` (the first
screen), ``sections`` (the comparison, training, embeddings, recommendations, timings),
``tiles`` (the galleries' layout) and ``html`` (style, escaping, formats); ``plots`` draws the
training curves and metric charts (matplotlib, Agg); ``gallery`` samples the recommendation tables.
"""
