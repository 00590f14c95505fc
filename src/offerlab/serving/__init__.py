"""Online serving: the HTTP contract (`contracts`), model loading and request adapters (`models`).

The BentoML services that use them live in `serving/service.py` at the repository root.
"""
