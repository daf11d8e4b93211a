"""Serving the champion and challenger of adverse-event-predictor (see server.py)."""
