"""Deployments as assets: the served versions and the A/B report."""
