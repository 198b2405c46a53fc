"""Backward-compatibility check between two revisions of one schema (same major version).

A new revision must read every event the old revision allowed, and must not take away a
field that consumers of the old revision rely on. So, walking both documents together:
a property may be added only as optional; nothing may be removed, retyped, made required,
or constrained more tightly. Anything else needs a new major version (a new file and topic).
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_LOWER_BOUNDS = ("minimum", "exclusiveMinimum", "minLength", "minItems")
_UPPER_BOUNDS = ("maximum", "exclusiveMaximum", "maxLength", "maxItems")


def breaking_changes(old: Schema, new: Schema) -> list[str]:
    """Return a description of every change from ``old`` to ``new`` that breaks readers."""
    return _Walker(old, new).compare(old, new, "$")


class _Walker:
    """Walks two schema documents in step, resolving local ``$ref``s on each side."""

    def __init__(self, old_root: Schema, new_root: Schema) -> None:
        self._old_root = old_root
        self._new_root = new_root

    def compare(self, old: Schema, new: Schema, path: str) -> list[str]:
        old = _resolve(self._old_root, old)
        new = _resolve(self._new_root, new)
        problems: list[str] = []
        if _types(old) - _types(new):
            problems.append(f"{path}: type {sorted(_types(old))} became {sorted(_types(new))}")
        problems += _compare_constraints(old, new, path)
        problems += self._compare_properties(old, new, path)
        if "items" in old and "items" in new:
            problems += self.compare(old["items"], new["items"], f"{path}[]")
        if "anyOf" in old and "anyOf" in new:
            problems += self._compare_variants(old["anyOf"], new["anyOf"], path)
        return problems

    def _compare_properties(self, old: Schema, new: Schema, path: str) -> list[str]:
        problems: list[str] = []
        old_props: Schema = old.get("properties", {})
        new_props: Schema = new.get("properties", {})
        for name, old_prop in old_props.items():
            if name not in new_props:
                problems.append(f"{path}.{name}: removed")
            else:
                problems += self.compare(old_prop, new_props[name], f"{path}.{name}")
        for name in set(new.get("required", [])) - set(old.get("required", [])):
            problems.append(f"{path}.{name}: became required")
        if old.get("additionalProperties", True) is not False and (
            new.get("additionalProperties", True) is False
        ):
            problems.append(f"{path}: no longer allows additional properties")
        return problems

    def _compare_variants(self, old: list[Schema], new: list[Schema], path: str) -> list[str]:
        if len(new) < len(old):
            return [f"{path}: anyOf lost variants"]
        problems: list[str] = []
        for index, (old_variant, new_variant) in enumerate(zip(old, new, strict=False)):
            problems += self.compare(old_variant, new_variant, f"{path}|{index}")
        return problems


def _resolve(root: Schema, node: Schema) -> Schema:
    ref = node.get("$ref")
    if not isinstance(ref, str) or not ref.startswith("#/"):
        return node
    target: Any = root
    for part in ref[2:].split("/"):
        target = target[part]
    resolved: Schema = target
    return resolved


def _types(node: Schema) -> set[str]:
    value = node.get("type")
    if value is None:
        return set()
    return {value} if isinstance(value, str) else set(value)


def _compare_constraints(old: Schema, new: Schema, path: str) -> list[str]:
    problems = []
    for key in _LOWER_BOUNDS:
        if key in new and (key not in old or new[key] > old[key]):
            problems.append(f"{path}: {key} tightened to {new[key]}")
    for key in _UPPER_BOUNDS:
        if key in new and (key not in old or new[key] < old[key]):
            problems.append(f"{path}: {key} tightened to {new[key]}")
    if "pattern" in new and new.get("pattern") != old.get("pattern"):
        problems.append(f"{path}: pattern changed to {new['pattern']!r}")
    old_values, new_values = _allowed(old), _allowed(new)
    if old_values is not None and new_values is not None and old_values - new_values:
        problems.append(f"{path}: enum lost {sorted(old_values - new_values)}")
    if new_values is not None and old_values is None:
        problems.append(f"{path}: became an enum")
    return problems


def _allowed(schema: Schema) -> set[Any] | None:
    """The values an ``enum`` (or a ``const``, an enum of one) allows; None: any value."""
    if "enum" in schema:
        return set(schema["enum"])
    if "const" in schema:
        return {schema["const"]}
    return None
