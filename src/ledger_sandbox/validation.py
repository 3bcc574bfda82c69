"""Requests checked against the marketplaces' real published schemas.

The specs are the marketplaces' own files (Amazon's Swagger 2.0 models, eBay's OpenAPI 3 Sell Fulfillment
spec). The repository keeps copies in `marketplace-specs/` (see its README); `specs_dir()` finds them in
`$LEDGER_MARKETPLACE_SPECS` (the Docker image sets it), or in a `marketplace-specs` or `shared/marketplace-specs`
directory beside the checkout or one of its parents, with `amazon/ordersV0.json`, `amazon/feeds_2021-06-30.json` and
`ebay/sell_fulfillment_v1_oas3.json` inside. `Spec` loads one file and answers, for a model (a definition or component schema name), the errors of a JSON body, and for an
operation (path and method), the errors of its query parameters.

Strictness: the real schemas leave `additionalProperties` open, so a misspelt field would pass them and be
silently ignored by the marketplace. With `strict=True` (the default) every object schema that lists
properties and says nothing about others is closed, so such a typo in our adapter fails a test here.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema_rs

SPECS_ENV = "LEDGER_MARKETPLACE_SPECS"
SPEC_FILES = ("amazon/ordersV0.json", "amazon/feeds_2021-06-30.json", "ebay/sell_fulfillment_v1_oas3.json")


class SpecsNotFoundError(FileNotFoundError):
    """The marketplaces' schema files are nowhere to be found, so requests cannot be validated."""

    code = "specs-not-found"


def specs_dir() -> Path:
    """Where the spec files are (see the module docstring); SpecsNotFoundError when nowhere."""
    configured = os.environ.get(SPECS_ENV)
    if configured:
        candidates = [Path(configured)]  # set explicitly: that directory or an error, never a guess
    else:
        candidates = [
            parent / name
            for parent in Path(__file__).resolve().parents
            for name in ("shared/marketplace-specs", "marketplace-specs")
        ]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in SPEC_FILES):
            return candidate
    raise SpecsNotFoundError(
        f"the marketplace spec files ({', '.join(SPEC_FILES)}) are not in "
        f"{configured or 'shared/marketplace-specs beside the checkout'}: set {SPECS_ENV} to their directory"
    )


def _close_objects(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


class Spec:
    """One marketplace spec file: Swagger 2.0 (`definitions`) or OpenAPI 3 (`components.schemas`)."""

    def __init__(self, document: Mapping[str, Any], *, strict: bool = True) -> None:
        self.document = document
        self.openapi3 = "openapi" in document
        self._models = copy.deepcopy(
            document["components"]["schemas"] if self.openapi3 else document["definitions"]
        )
        if strict:
            _close_objects(self._models)
        self._validators: dict[str, Any] = {}

    @classmethod
    def load(cls, relative: str, *, strict: bool = True) -> Spec:
        return cls(json.loads((specs_dir() / relative).read_text(encoding="utf-8")), strict=strict)

    def _validator(self, model: str) -> Any:
        if model not in self._validators:
            if model not in self._models:
                raise KeyError(f"no model {model!r} in the spec")
            if self.openapi3:
                schema: dict[str, Any] = {
                    "$ref": f"#/components/schemas/{model}",
                    "components": {"schemas": self._models},
                }
            else:
                schema = {"$ref": f"#/definitions/{model}", "definitions": self._models}
            self._validators[model] = jsonschema_rs.Draft4Validator(schema)
        return self._validators[model]

    def body_errors(self, model: str, body: Any) -> list[str]:
        """Why `body` is not a valid `model` (empty: it is)."""
        return [
            f"{'/'.join(str(p) for p in error.instance_path) or '(body)'}: {error.message}"
            for error in self._validator(model).iter_errors(body)
        ]

    def query_errors(self, path: str, method: str, query: Mapping[str, Sequence[str]]) -> list[str]:
        """Missing required query parameters, unknown ones, and values of the wrong type or out of range."""
        operation = self.document["paths"][path][method.lower()]
        declared = {p["name"]: p for p in operation.get("parameters", []) if p.get("in") == "query"}
        errors = [f"unknown query parameter {name!r}" for name in query if name not in declared]
        for name, parameter in declared.items():
            values = list(query.get(name, ()))
            if not values:
                if parameter.get("required"):
                    errors.append(f"query parameter {name!r} is required")
                continue
            schema = parameter.get("schema", parameter)
            errors += [f"{name}: {e}" for e in _param_errors(schema, values, parameter)]
        return errors


def _param_errors(schema: Mapping[str, Any], values: list[str], parameter: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type", "string")
    if kind == "array":
        items: list[str] = []
        for value in values:
            items += value.split(",") if parameter.get("collectionFormat", "csv") == "csv" else [value]
        errors = []
        if "maxItems" in schema and len(items) > schema["maxItems"]:
            errors.append(f"at most {schema['maxItems']} values")
        if "minItems" in schema and len(items) < schema["minItems"]:
            errors.append(f"at least {schema['minItems']} values")
        for item in items:
            errors += _scalar_errors(schema.get("items", {}), item)
        return errors
    if len(values) > 1:
        return ["given more than once"]
    return _scalar_errors(schema, values[0])


def _scalar_errors(schema: Mapping[str, Any], value: str) -> list[str]:
    kind = schema.get("type", "string")
    if kind == "integer":
        try:
            number = int(value)
        except ValueError:
            return [f"{value!r} is not an integer"]
        if "minimum" in schema and number < schema["minimum"]:
            return [f"{number} is below {schema['minimum']}"]
        if "maximum" in schema and number > schema["maximum"]:
            return [f"{number} is above {schema['maximum']}"]
    if kind == "boolean" and value not in ("true", "false"):
        return [f"{value!r} is not a boolean"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{value!r} is not one of {', '.join(map(str, schema['enum']))}"]
    return []


@cache
def spec(relative: str) -> Spec:
    """A spec file, loaded once per process."""
    return Spec.load(relative)
