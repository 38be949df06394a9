"""Name, label and annotation syntax, with the messages kube-apiserver uses.

Pure functions returning lists of messages (empty = valid), mirroring the helpers of upstream's
``util/validation`` package: RFC 1123 labels and subdomains, RFC 1035 labels, path segments,
qualified names (label and annotation keys) and label values. ``validate_name`` applies the
rule a resource's ``ResourceInfo.name_rule`` names; ``validate_generate_name`` does the same for
a ``metadata.generateName`` prefix (a trailing ``-`` is allowed there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sampan.api import fielderrors as fe
from sampan.api.errors import Cause
from sampan.api.resources import ResourceInfo

__all__ = [
    "DNS1035_LABEL_MAX_LENGTH",
    "DNS1123_LABEL_MAX_LENGTH",
    "DNS1123_SUBDOMAIN_MAX_LENGTH",
    "LABEL_VALUE_MAX_LENGTH",
    "QUALIFIED_NAME_MAX_LENGTH",
    "TOTAL_ANNOTATION_SIZE_LIMIT_BYTES",
    "is_dns1035_label",
    "is_dns1123_label",
    "is_dns1123_subdomain",
    "is_qualified_name",
    "is_valid_label_value",
    "is_valid_path_segment_name",
    "validate_annotations",
    "validate_generate_name",
    "validate_labels",
    "validate_name",
]

DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
DNS1035_LABEL_MAX_LENGTH = 63
QUALIFIED_NAME_MAX_LENGTH = 63
LABEL_VALUE_MAX_LENGTH = 63
TOTAL_ANNOTATION_SIZE_LIMIT_BYTES = 256 * 1024

_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_DNS1123_SUBDOMAIN_FMT = _DNS1123_LABEL_FMT + "(\\." + _DNS1123_LABEL_FMT + ")*"
_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
    "or '.', and must start and end with an alphanumeric character"
)
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with "
    "an alphabetic character, and end with an alphanumeric character"
)
_QUALIFIED_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_LABEL_VALUE_FMT = "(" + _QUALIFIED_NAME_FMT + ")?"
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character"
)

_DNS1123_LABEL_RE = re.compile(f"^{_DNS1123_LABEL_FMT}$")
_DNS1123_SUBDOMAIN_RE = re.compile(f"^{_DNS1123_SUBDOMAIN_FMT}$")
_DNS1035_LABEL_RE = re.compile(f"^{_DNS1035_LABEL_FMT}$")
_QUALIFIED_NAME_RE = re.compile(f"^{_QUALIFIED_NAME_FMT}$")
_LABEL_VALUE_RE = re.compile(f"^{_LABEL_VALUE_FMT}$")


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    """Upstream's RegexError wording, including its quirky ``'a',  or 'b', `` spacing."""
    if not examples:
        return f"{msg} (regex used for validation is '{fmt}')"
    listed = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {listed}regex used for validation is '{fmt}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def is_dns1123_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_LABEL_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL_RE.match(value):
        if _DNS1123_SUBDOMAIN_RE.match(value):
            # Upstream gives a clearer hint when the value is a subdomain but not a label.
            errs.append("must not contain dots")
        else:
            errs.append(_regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name", "123-abc"))
    return errs


def is_dns1123_subdomain(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errs.append(_max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN_RE.match(value):
        errs.append(_regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT, "example.com"))
    return errs


def is_dns1035_label(value: str) -> list[str]:
    errs = []
    if len(value) > DNS1035_LABEL_MAX_LENGTH:
        errs.append(_max_len_error(DNS1035_LABEL_MAX_LENGTH))
    if not _DNS1035_LABEL_RE.match(value):
        errs.append(_regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name", "abc-123"))
    return errs


def is_valid_path_segment_name(value: str) -> list[str]:
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    errs = []
    for illegal in ("/", "%"):
        if illegal in value:
            errs.append(f"may not contain '{illegal}'")
    return errs


def is_qualified_name(value: str) -> list[str]:
    """A label or annotation key: ``[prefix/]name``, prefix a DNS subdomain."""
    errs: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errs.append("prefix part must be non-empty")
        else:
            errs.extend("prefix part " + m for m in is_dns1123_subdomain(prefix))
    else:
        return [
            "a qualified name "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > QUALIFIED_NAME_MAX_LENGTH:
        errs.append("name part " + _max_len_error(QUALIFIED_NAME_MAX_LENGTH))
    if not _QUALIFIED_NAME_RE.match(name):
        errs.append(
            "name part "
            + _regex_error(_QUALIFIED_NAME_MSG, _QUALIFIED_NAME_FMT, "MyName", "my.name", "123-abc")
        )
    return errs


def is_valid_label_value(value: str) -> list[str]:
    errs = []
    if len(value) > LABEL_VALUE_MAX_LENGTH:
        errs.append(_max_len_error(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE_RE.match(value):
        errs.append(
            _regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value", "12345")
        )
    return errs


_RULES = {
    "dns1123-subdomain": is_dns1123_subdomain,
    "dns1123-label": is_dns1123_label,
    "dns1035-label": is_dns1035_label,
    "path-segment": is_valid_path_segment_name,
}


def validate_name(info: ResourceInfo, name: str) -> list[str]:
    """Messages for an invalid ``metadata.name`` of this resource (empty list = valid)."""
    return _RULES[info.name_rule](name)


def validate_generate_name(info: ResourceInfo, prefix: str) -> list[str]:
    """Messages for an invalid ``metadata.generateName``: the prefix plus random characters
    must be able to form a valid name, so a trailing ``-`` is fine."""
    if info.name_rule != "path-segment" and prefix.endswith("-"):
        prefix = prefix[:-1] + "a"
    return _RULES[info.name_rule](prefix)


def validate_labels(labels: object, path: str = "metadata.labels") -> list[Cause]:
    if labels is None:
        return []
    if not isinstance(labels, Mapping):
        return [fe.invalid(path, labels, "must be a map of string keys to string values")]
    causes: list[Cause] = []
    for key, value in labels.items():
        causes.extend(fe.invalid(path, key, m) for m in is_qualified_name(str(key)))
        if not isinstance(value, str):
            causes.append(fe.invalid(path, value, "must be a string"))
            continue
        causes.extend(fe.invalid(path, value, m) for m in is_valid_label_value(value))
    return causes


def validate_annotations(annotations: object, path: str = "metadata.annotations") -> list[Cause]:
    if annotations is None:
        return []
    if not isinstance(annotations, Mapping):
        return [fe.invalid(path, annotations, "must be a map of string keys to string values")]
    causes: list[Cause] = []
    total_bytes = 0
    for key, value in annotations.items():
        causes.extend(fe.invalid(path, key, m) for m in is_qualified_name(str(key).lower()))
        total_bytes += len(str(key).encode()) + len(str(value).encode())
    if total_bytes > TOTAL_ANNOTATION_SIZE_LIMIT_BYTES:
        causes.append(fe.too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT_BYTES))
    return causes
