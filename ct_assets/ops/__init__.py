"""Operating the platform as a service: the `ct` command's start, stop, health, summary and pictures."""
