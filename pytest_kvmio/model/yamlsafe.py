"""YAML for kvmio's input files: safe tags only, no duplicate keys, dates kept as text, aliases bounded.

yaml.SafeLoader already refuses `!!python/...` tags. What it allows is a document of a few hundred bytes
whose anchors and aliases stand for billions of values ("billion laughs"): loading shares them, but
anything that walks the result — a JSON Schema validator, a loop over entries — visits every one. So the
node graph is measured before anything is constructed, and a document that expands beyond
`MAX_EXPANDED_NODES` is refused with the line of its first alias. Errors are `yaml.MarkedYAMLError`s
(line and column attached), which the callers already turn into messages naming the file.
"""

from __future__ import annotations

from typing import Any

import yaml

#: Values a document may stand for once its aliases are expanded; kvmio's largest real files have a few thousand.
MAX_EXPANDED_NODES = 100_000


class AliasBomb(yaml.MarkedYAMLError):
    """A document whose aliases expand beyond MAX_EXPANDED_NODES values, or that contains itself."""


class Loader(yaml.SafeLoader):
    """A safe loader that rejects duplicate keys and keeps dates as strings (the schemas expect text)."""


def _construct_mapping(loader: Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            continue  # let the constructor report an unhashable key
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first defined on line {first})", key_node.start_mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


def _construct_timestamp(loader: Loader, node: yaml.ScalarNode) -> str:
    """Keep `expires: 2024-05-02` a string: the caller checks it is a calendar date and says where."""
    return str(loader.construct_scalar(node))


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp)


def expanded_size(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """Return how many values the node graph stands for with every alias expanded; raise AliasBomb past `limit`."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise AliasBomb(None, None, "an alias refers to the collection that contains it", node.start_mark)
        open_nodes.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise AliasBomb(
                    None, None,
                    f"anchors and aliases expand to more than {limit:,} values (a \"billion laughs\" document); "
                    "write the values out instead of nesting aliases",
                    child.start_mark,
                )
        open_nodes.discard(key)
        sizes[key] = total
        return total

    return size(root)


def load_text(text: str) -> Any:
    """Parse one YAML document safely; raise yaml.YAMLError (usually MarkedYAMLError, with the line) when it is bad."""
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        expanded_size(node)
        return loader.construct_document(node)
    except RecursionError:
        raise yaml.YAMLError("collections nested too deeply to read (thousands of levels)") from None
    finally:
        loader.dispose()
