"""The model server's OpenAPI 3.0 document (``GET /openapi.json``), written from the champion it serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ct_assets.core.bounds import MAX_TEXT
from ct_assets.core.privacy import PSEUDONYM_RE
from ct_assets.core.registry import CHALLENGER, CHAMPION
from ct_assets.serving.inputs import MAX_INSTANCES

if TYPE_CHECKING:
    from ct_assets.serving.models import Slot


def openapi_document(champion: Slot | None, require_auth: bool, max_body_bytes: int) -> dict:
    """OpenAPI 3.0 of this server, with the champion's features, types and bounds (what a client,
    and the schemathesis fuzz of the tests, need to know)."""
    features: dict = {}
    required: list[str] = []
    if champion is not None:
        for name in champion.features:
            nullable = name not in champion.required
            if name in champion.numeric:
                lo, hi, why = (champion.bounds or {}).get(name, (None, None, ""))
                schema = {"type": "number", "description": why} | ({"minimum": lo, "maximum": hi} if lo is not None else {})
            else:
                allowed = (champion.categories or {}).get(name)
                schema = {"type": "string", "maxLength": MAX_TEXT} | ({"enum": sorted(allowed)} if allowed else {})
            features[name] = schema | ({"nullable": True} if nullable else {})
        required = list(champion.required)
    instance = {"type": "object", "additionalProperties": False, "required": ["subject_key"], "properties": {
        "subject_key": {"type": "string", "pattern": PSEUDONYM_RE.pattern.replace("\\Z", "$").replace("\\-", "-"),
                        "description": "the subject's pseudonym, never a raw USUBJID"},
        "features": {"type": "object", "additionalProperties": False, "properties": features,
                     "description": "what-if scoring; without it, the subject's features come from the online store"} | (
            {"required": required} if required else {})}}
    prediction = {"type": "object", "required": ["subject_key", "risk", "alias", "version"], "properties": {
        "subject_key": {"type": "string"}, "risk": {"type": "number", "minimum": 0, "maximum": 1},
        "alias": {"type": "string", "enum": [CHAMPION, CHALLENGER]}, "version": {"type": "integer"},
        "feature_timestamp": {"type": "string", "format": "date-time",
                              "description": "by subject key: the landmark the stored features hold as of"},
        "features_from": {"type": "string", "enum": ["online_store"]}}}
    error = {"description": "refused, with the reason", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    ok = {"type": "object"}

    def answer(schema: dict, description: str = "OK") -> dict:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    secured = [{"bearer": []}]
    predict = {"summary": "Risk of a clinically significant adverse event, per subject",
               "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                   {"$ref": "#/components/schemas/Instance"},
                   {"type": "object", "additionalProperties": False, "required": ["instances"], "properties": {
                       "instances": {"type": "array", "minItems": 1, "maxItems": MAX_INSTANCES, "uniqueItems": True,
                                     "description": "each subject key once among the instances sent by key",
                                     "items": {"$ref": "#/components/schemas/Instance"}}}}]}}}},
               "responses": {"200": answer({"oneOf": [prediction, {
                   "type": "object", "required": ["predictions"],
                   "properties": {"predictions": {"type": "array", "items": prediction}}}]}),
                   "401": error, "404": error | {"description": "a subject key the online feature store does not know"},
                   "413": error | {"description": f"body over {max_body_bytes} bytes"},
                   "415": error, "422": error, "503": error}}
    if require_auth:
        predict["security"] = secured
    else:
        predict["security"] = []
    return {
        "openapi": "3.0.3",
        "info": {"title": "adverse-event-predictor model server", "version": "1"},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Instance": instance}},
        "security": secured,
        "paths": {
            "/predict": {"post": predict},
            "/health": {"get": {"security": [], "responses": {"200": answer(ok)}}},
            "/ready": {"get": {"security": [], "responses": {"200": answer(ok), "503": answer(ok, "not ready")}}},
            "/metrics": {"get": {"security": [], "responses": {"200": {"description": "Prometheus text",
                                                                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/models": {"get": {"responses": {"200": answer(ok), "401": error}}},
            "/reload": {"post": {"responses": {"200": answer(ok), "401": error}}},
            "/openapi.json": {"get": {"security": [], "responses": {"200": answer(ok)}}},
        },
    }
