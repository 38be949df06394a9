"""Unit tests of sampan.addons.manifests: which files count, names, parsing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sampan.addons.manifests import ManifestError, addon_name, parse_manifest, scan_manifests


def test_scan_takes_yaml_yml_json_and_honours_skip(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("x: 1\n")
    (tmp_path / "b.yml").write_text("x: 2\n")
    (tmp_path / "c.json").write_text("{}")
    (tmp_path / "d.txt").write_text("no")
    (tmp_path / ".hidden.yaml").write_text("no")
    (tmp_path / "e.yaml").write_text("skipped")
    (tmp_path / "e.yaml.skip").write_text("")
    (tmp_path / "sub.yaml").mkdir()
    found = scan_manifests(tmp_path)
    assert [m.path.name for m in found] == ["a.yaml", "b.yml", "c.json"]
    assert found[0].checksum == hashlib.sha256(b"x: 1\n").hexdigest()
    assert scan_manifests(tmp_path / "missing") == []


def test_addon_name_is_a_valid_name() -> None:
    assert addon_name(Path("/m/coredns.yaml")) == "coredns"
    assert addon_name(Path("/m/My_App Config.yml")) == "my-app-config"
    assert addon_name(Path("/m/-.json")) == "manifest"


def test_parse_multi_document_and_lists() -> None:
    text = b"""
apiVersion: v1
kind: ConfigMap
metadata: {name: one}
---
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ConfigMap, metadata: {name: two}}
- {apiVersion: v1, kind: Secret, metadata: {name: three}}
"""
    objects = parse_manifest("x.yaml", text)
    assert [o["metadata"]["name"] for o in objects] == ["one", "two", "three"]
    assert parse_manifest(
        "x.json", b'{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"n"}}'
    )


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"a: [1,\n", "cannot parse"),
        (b"- 1\n- 2\n", "document 1 is not an object"),
        (b"kind: ConfigMap\nmetadata: {name: x}\n", "apiVersion is missing"),
        (b"apiVersion: v1\nmetadata: {name: x}\n", "kind is missing"),
        (b"apiVersion: v1\nkind: ConfigMap\n", "metadata.name is missing"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_parse_errors_say_what_is_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(ManifestError, match=problem):
        parse_manifest("bad.yaml", data)
