"""Keep secrets out of reports: passwords, cookies and secret references in domain XML, passwords in URIs.

Reports go to change boards, wikis and CI artefact stores. Domain XML read live comes without
`VIR_DOMAIN_XML_SECURE` (libvirt leaves passwords out), but offline files carry whatever their author
wrote; host specs and libvirt URIs may carry `user:password@` or `?password=...`.
"""

from __future__ import annotations

import copy
import logging
import re

from lxml import etree

MASK = "***"
#: Attributes whose value is a secret wherever they appear (VNC/SPICE/RDP `passwd`, ...).
SECRET_ATTRIBUTES = ("passwd", "password", "secret", "token")
#: Elements that name a libvirt secret: their identifying attributes are masked too.
SECRET_REFERENCES = ("secret",)
#: Words every masked attribute name or element tag holds (SECRET_ATTRIBUTES, SECRET_REFERENCES, <cookie>).
_MAYBE_SECRET = re.compile("|".join((*SECRET_ATTRIBUTES, *SECRET_REFERENCES, "cookie")), re.IGNORECASE)
_SECRET_NAME = re.compile(r"pass|secret|token|cookie|auth|credential", re.IGNORECASE)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@", re.IGNORECASE)
_QUERY = re.compile(r"(?P<key>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")
#: testinfra's SSH backend runs `sshpass -p PASSWORD ssh ...` for a spec with a password (and logs it).
_SSHPASS = re.compile(r"(?P<key>\bsshpass\s+-p\s*)(?P<value>\S+)")


def redact_xml(xml: str | bytes) -> str:
    """Return domain XML with secret values masked; XML that does not parse is returned masked as a whole."""
    data = xml.encode() if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return MASK
    return redacted_text(root)


def redacted_text(root: etree._Element, *, in_place: bool = False) -> str:
    """Return the XML text of a parsed document with secret values masked (the tree itself is not changed, unless
    `in_place`: a copy of the caller's own is masked where it is)."""
    text = etree.tostring(root, encoding="unicode")
    if not _MAYBE_SECRET.search(text):  # names and tags are never escaped: without these words nothing is masked
        return text
    if not in_place:
        root = copy.deepcopy(root)
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        for name in list(el.attrib):
            if name.lower() in SECRET_ATTRIBUTES or (el.tag in SECRET_REFERENCES and name in ("uuid", "usage")):
                el.set(name, MASK)
        if el.tag == "cookie" and el.text:
            el.text = MASK
    return etree.tostring(root, encoding="unicode")


def redact_uri(text: str) -> str:
    """Mask `user:password@`, query parameters named like a password, secret or token, and `sshpass -p` in any text."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SSHPASS.sub(lambda m: m["key"] + MASK, text)
    return _QUERY.sub(lambda m: m["key"] + (MASK if _SECRET_NAME.search(m["name"]) else m["value"]), text)


class RedactingFilter(logging.Filter):
    """A logging filter that masks passwords in a record's message (testinfra logs every command it runs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact_uri(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True
