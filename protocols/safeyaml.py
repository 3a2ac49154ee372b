"""A YAML loader for protocol files that a hostile or careless file cannot exhaust.

PyYAML's ``safe_load`` constructs no Python objects, but it still expands aliases (a 1 KB
"billion laughs" file becomes gigabytes once anything walks it), recurses once per nesting
level (a deeply nested file ends in ``RecursionError``) and silently keeps the last of two
equal keys. :func:`load_yaml` refuses all of these with the line they are on:

- aliases (``*name``): refused, whatever their number. An anchor alone (``&name``) is harmless
  and allowed; a protocol is short enough to write every value out;
- nesting deeper than :data:`MAX_DEPTH` levels, more than :data:`MAX_NODES` values in all, or a
  file larger than :data:`MAX_BYTES`;
- a key given twice in one mapping (the second occurrence is reported, with the line of the first);
- more than one document in the file.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

#: Largest protocol file read (bytes). The bundled protocols are a few kilobytes.
MAX_BYTES: Final = 256 * 1024
#: Deepest nesting of mappings and lists accepted (the schema needs 6 levels).
MAX_DEPTH: Final = 32
#: Most values (scalars, mappings, lists) in one file.
MAX_NODES: Final = 10_000


class YamlRefused(Exception):
    """A YAML document that is refused before anything is constructed from it."""

    def __init__(self, message: str, fix: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        self.line = line
        self.column = column


class _GuardedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases, duplicate keys, deep nesting and huge documents."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def _refuse(self, message: str, fix: str, mark: Any) -> YamlRefused:
        return YamlRefused(
            message,
            fix,
            line=mark.line + 1 if mark is not None else None,
            column=mark.column + 1 if mark is not None else None,
        )

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise self._refuse(
                f"YAML aliases (*{event.anchor}) are not allowed in protocol files",
                "write the value out in full instead of referring to an anchor",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise self._refuse(
                f"the file holds more than {MAX_NODES} values; a protocol has a few hundred",
                "check that this is a protocol file",
                self.peek_event().start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise self._refuse(
                    f"the YAML is nested more than {MAX_DEPTH} levels deep",
                    "a protocol needs only a few levels; remove the extra nesting",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node: yaml.MappingNode = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self._refuse(
                    "a mapping key is itself a list or mapping",
                    "use plain words as keys",
                    key_node.start_mark,
                )
            key = (key_node.tag, key_node.value)
            if key_node.tag == "tag:yaml.org,2002:merge" or key_node.value == "<<":
                raise self._refuse(
                    "YAML merge keys (<<) are not allowed in protocol files",
                    "write the keys out in full",
                    key_node.start_mark,
                )
            line = key_node.start_mark.line + 1
            if key in seen:
                raise self._refuse(
                    f"duplicate key {key_node.value!r} (first given at line {seen[key]}); YAML would silently "
                    "keep only the last value",
                    "keep one of them",
                    key_node.start_mark,
                )
            seen[key] = line
        return node


def load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """Parse one YAML document: its node tree (for line numbers) and its data.

    Raises
    ------
    YamlRefused
        Aliases, merge keys, duplicate keys, too deep, too many values or too large.
    yaml.YAMLError
        The text is not valid YAML (syntax error, unknown tag, several documents...).
    """
    if len(text) > MAX_BYTES:
        raise YamlRefused(
            f"the file is {len(text):,} characters long; a protocol is a few kilobytes (at most {MAX_BYTES:,})",
            "check that this is a protocol file",
        )
    loader = _GuardedLoader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()
    return node, data
