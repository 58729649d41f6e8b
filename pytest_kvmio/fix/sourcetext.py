"""Apply a fix to a file's own text: the edits change the parsed tree, and only what they changed is written back.

A domain XML file is tokenized once (start tags with each attribute's span and quote, end tags, comments) and its
nodes are bound one to one to the lxml tree the edits work on. After the edits, `SourceText.patched()` compares the
tree with what was bound and rewrites only the changed attribute values, the attributes added or removed, the
changed text of a leaf (an `<iothreads>` count) and the elements inserted or removed. Everything else keeps its
bytes: the XML declaration, comments, quoting, indentation, attribute order and namespace declarations. An inserted
element copies its siblings' indentation (its parent's plus the file's indent step when it has no sibling) and the
file's quote character; its own children are indented one step further.

The patched text is parsed again and compared with the edited tree (whitespace aside): anything this module cannot
reproduce raises `NotEditable`, and the caller writes the tree out instead, saying why.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field

from lxml import etree

from pytest_kvmio.model.domain import SAFE_PARSER
from pytest_kvmio.model.redact import MASK, SECRET_ATTRIBUTES, SECRET_REFERENCES

_NAME = re.compile(r"[^\s/>=<\"']+")
_SPACE = re.compile(r"\s*")
DEFAULT_INDENT = "  "
DEFAULT_QUOTE = "'"  # libvirt writes attributes in single quotes


class NotEditable(Exception):
    """The text cannot be patched in place (the reason says why); the tree is written out instead."""


@dataclass
class _Attr:
    name: str
    lead: int  # start of the whitespace before the name
    value_start: int  # after the opening quote
    value_end: int  # at the closing quote
    quote: str


@dataclass
class _Node:
    kind: str  # element | comment | pi
    name: str
    start: int  # its '<'
    head_end: int  # after the '>' of its start tag (a comment's or PI's end)
    self_closing: bool = False
    attrs: list[_Attr] = field(default_factory=list)
    close_start: int | None = None  # the '<' of its end tag
    end: int = 0  # after its last character


def _scan(text: str) -> list[_Node]:
    """Return the root element and every node inside it, in document order."""
    nodes: list[_Node] = []
    stack: list[_Node] = []
    i = 0
    while True:
        lt = text.find("<", i)
        if lt < 0:
            break
        if text.startswith("<!--", lt):
            end = _find(text, "-->", lt) + 3
            if stack:
                nodes.append(_Node("comment", "", lt, end, end=end))
            i = end
        elif text.startswith("<![CDATA[", lt):
            i = _find(text, "]]>", lt) + 3
        elif text.startswith("<?", lt):
            end = _find(text, "?>", lt) + 2
            if stack:
                nodes.append(_Node("pi", "", lt, end, end=end))
            i = end
        elif text.startswith("<!", lt):
            i = _doctype_end(text, lt)
        elif text.startswith("</", lt):
            if not stack:
                raise NotEditable(f"an end tag at offset {lt} closes nothing")
            node = stack.pop()
            node.close_start = lt
            node.end = _find(text, ">", lt) + 1
            i = node.end
        else:
            node = _start_tag(text, lt)
            if not stack and nodes:
                raise NotEditable("more than one root element")
            nodes.append(node)
            if not node.self_closing:
                stack.append(node)
            i = node.head_end
    if stack:
        raise NotEditable(f"<{stack[-1].name}> is not closed")
    return nodes


def _find(text: str, what: str, start: int) -> int:
    found = text.find(what, start)
    if found < 0:
        raise NotEditable(f"no {what!r} after offset {start}")
    return found


def _doctype_end(text: str, lt: int) -> int:
    depth, quote, j = 0, "", lt + 2
    while j < len(text):
        ch = text[j]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == ">" and depth <= 0:
            return j + 1
        j += 1
    raise NotEditable("an unterminated <!DOCTYPE")


def _start_tag(text: str, lt: int) -> _Node:
    match = _NAME.match(text, lt + 1)
    if match is None:
        raise NotEditable(f"no element name at offset {lt}")
    node = _Node("element", match.group(), lt, 0)
    j = match.end()
    while True:
        lead = j
        j = _SPACE.match(text, j).end()  # type: ignore[union-attr]
        if text.startswith("/>", j):
            node.self_closing, node.head_end = True, j + 2
            node.end = node.head_end
            return node
        if text.startswith(">", j):
            node.head_end = j + 1
            return node
        name = _NAME.match(text, j)
        if name is None or j == lead:
            raise NotEditable(f"<{node.name}> at offset {lt}: cannot read its attributes")
        j = _SPACE.match(text, name.end()).end()  # type: ignore[union-attr]
        if not text.startswith("=", j):
            raise NotEditable(f"<{node.name}> at offset {lt}: attribute {name.group()} has no value")
        j = _SPACE.match(text, j + 1).end()  # type: ignore[union-attr]
        quote = text[j:j + 1]
        if quote not in ("'", '"'):
            raise NotEditable(f"<{node.name}> at offset {lt}: attribute {name.group()} is not quoted")
        close = _find(text, quote, j + 1)
        node.attrs.append(_Attr(name.group(), lead, j + 1, close, quote))
        j = close + 1


def _qname(el: etree._Element, key: str | None = None) -> str:
    """Return the name as written (prefix:local) of an element, or of one of its attributes (`key`, lxml's form)."""
    name = el.tag if key is None else key
    assert isinstance(name, str)
    if not name.startswith("{"):
        return name
    uri, local = name[1:].split("}", 1)
    if uri == "http://www.w3.org/XML/1998/namespace":
        return f"xml:{local}"
    prefix = next((p for p, u in el.nsmap.items() if u == uri and (p is not None or key is None)), None)
    return f"{prefix}:{local}" if prefix else local


def _attrs(el: etree._Element) -> dict[str, str]:
    return {str(k): str(v) for k, v in el.attrib.items()}


def _escape(value: str, quote: str | None) -> str:
    out = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if quote is not None:
        out = out.replace(quote, "&apos;" if quote == "'" else "&quot;")
        out = out.replace("\n", "&#10;").replace("\t", "&#9;").replace("\r", "&#13;")
    return out


@dataclass
class _Bound:
    node: _Node
    attrs: dict[str, str]
    text: str | None
    children: list[etree._Element]


class SourceText:
    """A document's text bound node by node to its parsed tree, so that edits of the tree patch only what they change."""

    def __init__(self, text: str, root: etree._Element) -> None:
        """Bind `text` to the tree `root` was parsed from; raise NotEditable when they do not line up."""
        self.text = text
        self.root = root.getroottree().getroot()
        nodes = _scan(text)
        tree = list(self.root.iter())
        if len(tree) != len(nodes):
            raise NotEditable(f"the text has {len(nodes)} nodes in its root element, the parsed tree {len(tree)}")
        self.bound: dict[etree._Element, _Bound] = {}
        for el, node in zip(tree, nodes):
            kind = "comment" if isinstance(el, etree._Comment) else "pi" if isinstance(
                el, etree._ProcessingInstruction) else "element" if isinstance(el.tag, str) else "other"
            if kind != node.kind or (kind == "element" and _qname(el) != node.name):
                raise NotEditable(f"offset {node.start}: the text has <{node.name or node.kind}>, the tree {kind} {el.tag}")
            self.bound[el] = _Bound(node, _attrs(el), el.text, list(el))
        self.quote = self._dominant_quote()
        self.unit = self._indent_unit()

    # --- the file's habits -------------------------------------------------------------------------------------

    def _dominant_quote(self) -> str:
        counts = Counter(a.quote for b in self.bound.values() for a in b.node.attrs)
        return counts.most_common(1)[0][0] if counts else DEFAULT_QUOTE

    def _line_indent(self, pos: int) -> str | None:
        """Return the whitespace before `pos` on its line, None when something else precedes it there."""
        start = self.text.rfind("\n", 0, pos) + 1
        prefix = self.text[start:pos]
        return prefix if not prefix.strip() else None

    def _indent_unit(self) -> str:
        steps: Counter[str] = Counter()
        for el, bound in self.bound.items():
            parent = el.getparent()
            if bound.node.kind != "element" or parent is None:
                continue
            mine, theirs = self._line_indent(bound.node.start), self._line_indent(self.bound[parent].node.start)
            if mine is not None and theirs is not None and mine.startswith(theirs) and len(mine) > len(theirs):
                steps[mine[len(theirs):]] += 1
        return steps.most_common(1)[0][0] if steps else DEFAULT_INDENT

    # --- patching ----------------------------------------------------------------------------------------------

    def patched(self) -> str:
        """Return the text with the tree's changes since binding written in, and nothing else changed."""
        ops: list[tuple[int, int, str]] = []
        alive = set(self.root.iter())
        for el, bound in self.bound.items():
            if el not in alive or not isinstance(el.tag, str):
                continue
            ops.extend(self._attribute_ops(el, bound))
            ops.extend(self._text_ops(el, bound))
            ops.extend(self._children_ops(el, bound, alive))
        text = self.text
        last = len(text) + 1
        for start, end, new in sorted(ops, key=lambda op: (op[0], op[1]), reverse=True):
            if end > last:
                raise NotEditable(f"overlapping edits at offset {start}")
            text = text[:start] + new + text[end:]
            last = start
        self._check(text)
        return text

    def _attribute_ops(self, el: etree._Element, bound: _Bound) -> list[tuple[int, int, str]]:
        after = _attrs(el)
        if after == bound.attrs:
            return []
        node, ops = bound.node, []
        spans = {a.name: a for a in node.attrs}
        for key, old in bound.attrs.items():
            span = spans.get(_qname(el, key))
            if span is None:
                raise NotEditable(f"<{node.name}> at offset {node.start}: attribute {key} not found in the text")
            if key not in after:
                ops.append((span.lead, span.value_end + 1, ""))
            elif after[key] != old:
                ops.append((span.value_start, span.value_end, _escape(after[key], span.quote)))
        added = [k for k in after if k not in bound.attrs]
        if added:
            quote = node.attrs[0].quote if node.attrs else self.quote
            at = node.attrs[-1].value_end + 1 if node.attrs else node.start + 1 + len(node.name)
            ops.append((at, at, "".join(f" {_qname(el, k)}={quote}{_escape(after[k], quote)}{quote}" for k in added)))
        return ops

    def _text_ops(self, el: etree._Element, bound: _Bound) -> list[tuple[int, int, str]]:
        old, new = (bound.text or "").strip(), (el.text or "").strip()
        if old == new:
            return []
        node = bound.node
        if any(isinstance(c.tag, str) for c in bound.children) or len(el):
            raise NotEditable(f"<{node.name}> at offset {node.start}: its text changed beside child elements")
        if node.self_closing:
            return [(node.head_end - 2, node.head_end, f">{_escape(new, None)}</{node.name}>")]
        assert node.close_start is not None
        return [(node.head_end, node.close_start, _escape(new, None))]

    def _children_ops(self, el: etree._Element, bound: _Bound, alive: set[etree._Element]) -> list[tuple[int, int, str]]:
        after = list(el)
        if after == bound.children:
            return []
        node, ops = bound.node, []
        kept = [c for c in after if c in self.bound]
        if kept != [c for c in bound.children if c in set(after)]:
            raise NotEditable(f"<{node.name}> at offset {node.start}: its children were moved, not only added or removed")
        for child in bound.children:
            if child not in alive:
                ops.append(self._removal(self.bound[child].node))
        layout = next((self.bound[c].node for c in bound.children if isinstance(c.tag, str)), None)
        indent = self._child_indent(node, layout)
        anchor: _Node | None = None
        pending: list[etree._Element] = []

        def flush(before: _Node | None) -> None:
            if not pending:
                return
            if anchor is not None:
                sep = "\n" + indent if indent is not None else ""
                ops.append((anchor.end, anchor.end, "".join(sep + self._render(c, indent) for c in pending)))
            elif before is not None:
                sep = "\n" + indent if indent is not None else ""
                ops.append((before.start, before.start, "".join(self._render(c, indent) + sep for c in pending)))
            else:
                ops.append(self._fill(node, [self._render(c, indent) for c in pending], indent))
            pending.clear()

        for child in after:
            if child in self.bound:
                flush(self.bound[child].node)
                anchor = self.bound[child].node
            else:
                if any(d in self.bound for d in child.iter()):
                    raise NotEditable(f"<{node.name}> at offset {node.start}: an existing element moved into a new one")
                pending.append(child)
        flush(None)
        return ops

    def _child_indent(self, parent: _Node, sibling: _Node | None) -> str | None:
        """Return the indentation of a new child (None: the file writes these elements on one line)."""
        if sibling is not None:
            return self._line_indent(sibling.start)
        mine = self._line_indent(parent.start)
        if mine is None or "\n" not in self.text.strip():
            return None
        return mine + self.unit

    def _fill(self, parent: _Node, rendered: list[str], indent: str | None) -> tuple[int, int, str]:
        """Return the edit that gives an element without children its first ones."""
        closing = "\n" + (self._line_indent(parent.start) or "") if indent is not None else ""
        body = "".join(("\n" + indent if indent is not None else "") + r for r in rendered) + closing
        if parent.self_closing:
            return (parent.head_end - 2, parent.head_end, f">{body}</{parent.name}>")
        assert parent.close_start is not None
        if self.text[parent.head_end:parent.close_start].strip():
            return (parent.close_start, parent.close_start, "".join(rendered))
        return (parent.head_end, parent.close_start, body)

    def _removal(self, node: _Node) -> tuple[int, int, str]:
        """Return the edit that removes a node, with its line when it has one of its own."""
        line_start = self.text.rfind("\n", 0, node.start) + 1
        line_end = self.text.find("\n", node.end)
        line_end = len(self.text) if line_end < 0 else line_end
        if not self.text[line_start:node.start].strip() and not self.text[node.end:line_end].strip() and line_start:
            return (line_start - 1, line_end, "")  # the newline before it, its indentation, itself
        return (node.start, node.end, "")

    def _render(self, el: etree._Element, indent: str | None) -> str:
        """Write a new element in the file's style: its quote character, its children indented one step further."""
        if not isinstance(el.tag, str):
            return ""
        name, q = _qname(el), self.quote
        attrs = "".join(f" {_qname(el, k)}={q}{_escape(v, q)}{q}" for k, v in _attrs(el).items())
        children = [c for c in el if isinstance(c.tag, str)]
        text = (el.text or "").strip()
        if not children and not text:
            return f"<{name}{attrs}/>"
        if not children:
            return f"<{name}{attrs}>{_escape(text, None)}</{name}>"
        inner = indent + self.unit if indent is not None else None
        sep = "\n" + inner if inner is not None else ""
        body = "".join(sep + self._render(c, inner) for c in children)
        return f"<{name}{attrs}>{body}{chr(10) + indent if indent is not None else ''}</{name}>"

    def _check(self, text: str) -> None:
        try:
            parsed = etree.fromstring(text.encode(), parser=SAFE_PARSER)
        except etree.XMLSyntaxError as exc:
            raise NotEditable(f"the patched text does not parse: {exc}") from None
        if _shape(parsed) != _shape(self.root):
            raise NotEditable("the patched text does not say what the edited tree says")


def _shape(root: etree._Element) -> bytes:
    """Return the tree's canonical form without whitespace-only text (what a patch must keep equal)."""
    root = copy.deepcopy(root)
    for el in root.iter():
        if el.text is not None and not el.text.strip() and isinstance(el.tag, str):
            el.text = None
        if el.tail is not None and not el.tail.strip():
            el.tail = None
    return etree.tostring(root, method="c14n", exclusive=True)


def decode(data: bytes, root: etree._Element) -> str:
    """Return a document's text in the encoding it declares (UTF-8 when it declares none)."""
    encoding = root.getroottree().docinfo.encoding or "utf-8"
    try:
        return data.decode(encoding)
    except (LookupError, UnicodeDecodeError) as exc:
        raise NotEditable(f"cannot read it as {encoding}: {exc}") from None


def encode(text: str, root: etree._Element) -> bytes:
    """Return the text in the encoding the document declares."""
    return text.encode(root.getroottree().docinfo.encoding or "utf-8")


def redacted_source(text: str) -> str:
    """Return the text with secret values masked in place (as model.redact masks them), all else kept byte for byte."""
    try:
        nodes = _scan(text)
    except NotEditable:
        return MASK
    ops = []
    for node in nodes:
        for attr in node.attrs:
            local = attr.name.rsplit(":", 1)[-1]
            if local.lower() in SECRET_ATTRIBUTES or (node.name in SECRET_REFERENCES and local in ("uuid", "usage")):
                ops.append((attr.value_start, attr.value_end, MASK))
        if node.name == "cookie" and node.close_start is not None and text[node.head_end:node.close_start].strip():
            ops.append((node.head_end, node.close_start, MASK))
    for start, end, new in sorted(ops, reverse=True):
        text = text[:start] + new + text[end:]
    return text


# --- the same changes as XPath settings (virt-xml --edit --xml), for tools that edit a defined domain ----------------

#: How an element is told from its siblings of the same name: by what identifies it to libvirt.
_KEYS: dict[str, tuple[str, ...]] = {
    "disk": ("target/@dev",), "controller": ("@type", "@index"), "vcpupin": ("@vcpu",), "iothreadpin": ("@iothread",),
    "iothread": ("@id",), "queue": ("@id",), "cell": ("@id",),
}


@dataclass(frozen=True)
class Change:
    """One change as an XPath relative to <domain>: `set` (xpath=value: an attribute or a leaf's text; missing
    elements on the way are created), `create` (an empty element) or `remove` (which virt-xml cannot express)."""

    kind: str
    xpath: str
    value: str = ""

    @property
    def virt_xml(self) -> str:
        """Return the argument of virt-xml's --xml option."""
        return f"{self.xpath}={self.value}" if self.kind == "set" else f"xpath.{self.kind}={self.xpath}"


def _key_value(el: etree._Element, key: str, attrs: dict[str, str]) -> str | None:
    if key.startswith("@"):
        return attrs.get(key[1:])
    found = el.xpath(key)
    return str(found[0]) if isinstance(found, list) and found else None


def _predicate(el: etree._Element, attrs: dict[str, str]) -> str:
    keys = _KEYS.get(str(etree.QName(el).localname), ())
    values = [(k, _key_value(el, k, attrs)) for k in keys]
    if keys and all(v is not None and "'" not in v for _, v in values):
        return "".join(f"[{k}='{v}']" for k, v in values)
    return ""


class _Changes:
    def __init__(self, source: SourceText) -> None:
        self.source = source
        self.out: list[Change] = []
        self.domain = next((el for el in source.root.iter("domain")), source.root)

    def path(self, el: etree._Element, parent: etree._Element | None = None) -> str:
        """Return the XPath of `el` from <domain> (`parent`: where a removed element was)."""
        if el is self.domain:
            return "."
        parent = el.getparent() if parent is None else parent
        assert parent is not None
        bound = self.source.bound.get(el)
        attrs = bound.attrs if bound is not None else _attrs(el)
        step = _qname(el) + _predicate(el, attrs)
        if bound is not None and not _predicate(el, attrs):
            same = [c for c in self.source.bound[parent].children if c.tag == el.tag] if parent in self.source.bound else [el]
            if len(same) > 1:
                step += f"[{same.index(el) + 1}]"
        return f"{self.path(parent)}/{step}"

    def created(self, el: etree._Element) -> None:
        """Add the settings that create a new element: its path names it by its keys, the rest are set on it."""
        path = self.path(el)
        attrs, text = _attrs(el), (el.text or "").strip()
        children = [c for c in el if isinstance(c.tag, str)]
        keys = {k[1:] for k in _KEYS.get(str(etree.QName(el).localname), ()) if k.startswith("@")}
        rest = {k: v for k, v in attrs.items() if k not in keys}
        for key, value in rest.items():
            self.out.append(Change("set", f"{path}/@{_qname(el, key)}", value))
        if text:
            self.out.append(Change("set", path, text))
        for child in children:
            self.created(child)
        if not rest and not text and not children:
            if attrs:  # only its keys: setting one creates it, as the path's predicate says
                key, value = next(iter(attrs.items()))
                self.out.append(Change("set", f"{path}/@{_qname(el, key)}", value))
            else:
                self.out.append(Change("create", path))


def changes(source: SourceText) -> list[Change]:
    """Return the tree's changes since `source` was bound, as XPath settings of virt-xml's --xml option."""
    found = _Changes(source)
    alive = set(source.root.iter())
    for el, bound in source.bound.items():
        if el not in alive or not isinstance(el.tag, str):
            continue
        path = found.path(el)
        after = _attrs(el)
        for key, old in bound.attrs.items():
            if key not in after:
                found.out.append(Change("remove", f"{path}/@{_qname(el, key)}"))
            elif after[key] != old:
                found.out.append(Change("set", f"{path}/@{_qname(el, key)}", after[key]))
        for key in after:
            if key not in bound.attrs:
                found.out.append(Change("set", f"{path}/@{_qname(el, key)}", after[key]))
        if (bound.text or "").strip() != (el.text or "").strip() and not len(el):
            found.out.append(Change("set", path, (el.text or "").strip()))
        for child in bound.children:
            if child not in alive and isinstance(child.tag, str):
                found.out.append(Change("remove", found.path(child, el)))
        for child in el:
            if child not in source.bound and isinstance(child.tag, str):
                found.created(child)
    return found.out
