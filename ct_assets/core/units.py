"""Units: the non-SI units SDTM deliveries use and their standard counterparts (one table for every engine)."""

# Non-SI units seen in SDTM --STRESU and their standard counterpart: value * factor + offset.
UNIT_CONVERSIONS: dict[str, tuple[str, float, float]] = {
    "LB": ("kg", 0.45359237, 0.0),
    "lb": ("kg", 0.45359237, 0.0),
    "[lb_av]": ("kg", 0.45359237, 0.0),
    "g": ("kg", 0.001, 0.0),
    "in": ("cm", 2.54, 0.0),
    "[in_i]": ("cm", 2.54, 0.0),
    "m": ("cm", 100.0, 0.0),
    "F": ("C", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "[degF]": ("C", 5.0 / 9.0, -32.0 * 5.0 / 9.0),
    "g/dL": ("g/L", 10.0, 0.0),
    "mg/dL": ("mg/L", 10.0, 0.0),
}
