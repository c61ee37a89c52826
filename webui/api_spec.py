"""The OpenAPI 3.1 document of /api/v1, written by hand.

tests/webui/test_api.py walks the app's url_map and checks that every
/api/v1 route and method is described here, and the schema fuzz run checks
the answers against it.
"""

from __future__ import annotations

from typing import Any

from curation.prediction import MAX_TOP_K

_ERROR_CODES = {
    "400": "A field is missing or has a bad value.",
    "401": "No token, or a token that is unknown, malformed or revoked.",
    "404": "No such resource (or no champion model yet, for predict).",
    "413": "The image is larger than the limit.",
    "415": "Not multipart/form-data, or the file is not a supported image.",
    "429": "Too many requests for this token, or too many reports from this reporter.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: {"$ref": f"#/components/responses/E{code}"} for code in codes}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_CLASS_REF = {
    "type": ["object", "null"],
    "required": ["slug", "display_name", "status"],
    "properties": {
        "slug": {"type": "string"},
        "display_name": {"type": "string"},
        "status": {"type": "string", "enum": ["proposed", "active", "retired"]},
    },
}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Prediction": {
        "type": "object",
        "required": ["model_version", "stored_image_id", "predictions"],
        "properties": {
            "model_version": {"type": "integer"},
            "stored_image_id": {
                "type": ["integer", "null"],
                "description": "The stored photo's id when store was asked for, else null.",
            },
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["slug", "name", "language", "probability"],
                    "properties": {
                        "slug": {"type": "string"},
                        "name": {"type": "string"},
                        "language": {
                            "type": "string",
                            "description": "The language of name; 'und' for the display name.",
                        },
                        "probability": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
            },
        },
    },
    "ClassRef": _CLASS_REF,
    "Report": {
        "type": "object",
        "required": ["id", "status", "claimed_class", "proposed_class", "outcome", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "status": {"type": "string", "enum": ["received", "queued", "in_review", "decided"]},
            "claimed_class": _ref("ClassRef"),
            "proposed_class": {
                "type": "boolean",
                "description": "The typed name matched no class and was kept as a proposal.",
            },
            "outcome": {
                "type": ["object", "null"],
                "required": ["verdict", "class"],
                "properties": {
                    "verdict": {
                        "type": "string",
                        "enum": ["confirmed", "corrected", "not_landmark"],
                    },
                    "class": _ref("ClassRef"),
                },
            },
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "ClassList": {
        "type": "object",
        "required": ["classes"],
        "properties": {
            "classes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["slug", "display_name", "status", "aliases"],
                    "properties": {
                        "slug": {"type": "string"},
                        "display_name": {"type": "string"},
                        "status": {"type": "string", "enum": ["proposed", "active", "retired"]},
                        "aliases": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["language", "name"],
                                "properties": {
                                    "language": {"type": "string"},
                                    "name": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            }
        },
    },
}


def openapi_document() -> dict[str, Any]:
    image = {"type": "string", "contentMediaType": "application/octet-stream"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Landmark curation API",
            "version": "1",
            "description": (
                "For apps: predictions from the champion model, and reports of wrong"
                " predictions that enter the review queue. Every error is JSON:"
                ' {"error": {"code": "...", "message": "..."}}.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearerToken": []}],
        "paths": {
            "/api/v1/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "security": [],
                    "responses": {"200": {"description": "The OpenAPI document."}},
                }
            },
            "/api/v1/predict": {
                "post": {
                    "operationId": "predict",
                    "summary": "The champion model's top-k landmarks for a photo"
                    " (stored for review only when asked).",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image"],
                                    "properties": {
                                        "image": image,
                                        "top_k": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": MAX_TOP_K,
                                            "default": 5,
                                        },
                                        "lang": {
                                            "type": "string",
                                            "maxLength": 16,
                                            "description": "Language of the names, e.g. ko.",
                                        },
                                        "store": {
                                            "type": "string",
                                            "enum": ["true", "false", "1", "0"],
                                            "default": "false",
                                            "description": "Keep the photo for review"
                                            " (it joins the queue as the app's crawl).",
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": _json(_ref("Prediction"), "The most likely landmarks first."),
                        **_errors("400", "401", "404", "413", "415", "429"),
                    },
                }
            },
            "/api/v1/reports": {
                "post": {
                    "operationId": "createReport",
                    "summary": "Report a wrong prediction: the photo and the name the user typed.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["image", "claimed"],
                                    "properties": {
                                        "image": image,
                                        "claimed": {
                                            "type": "string",
                                            "maxLength": 200,
                                            "description": "The name the user typed, any language.",
                                        },
                                        "predicted": {"type": "string", "maxLength": 200},
                                        "reporter_id": {"type": "string", "maxLength": 128},
                                        "note": {"type": "string", "maxLength": 2000},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(_ref("Report"), "Received; poll GET /api/v1/reports/{id}."),
                        **_errors("400", "401", "413", "415", "429"),
                    },
                }
            },
            "/api/v1/reports/{report_id}": {
                "get": {
                    "operationId": "getReport",
                    "summary": "What became of a report this app sent.",
                    "parameters": [
                        {
                            "name": "report_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**63},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Report"), "The report and its outcome so far."),
                        **_errors("401", "404", "429"),
                    },
                }
            },
            "/api/v1/classes": {
                "get": {
                    "operationId": "listClasses",
                    "summary": "Every landmark class, with its names in every language.",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": ["proposed", "active", "retired"]},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("ClassList"), "The classes, by slug."),
                        **_errors("400", "401", "429"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "cur_<prefix>_<secret>, created by an admin.",
                }
            },
            "schemas": _SCHEMAS,
            "responses": {
                f"E{code}": _json(_ref("Error"), description)
                for code, description in _ERROR_CODES.items()
            },
        },
    }
