"""The wire format (``frames``) and the agent's configuration, without sockets."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from sampan.manager.tunnel import AgentConfig, AgentError, ProtocolError, ca_checksum
from sampan.manager.tunnel.frames import (
    MAX_DATA_BYTES,
    MAX_FRAME_BYTES,
    FrameType,
    decode,
    decode_dial,
    decode_u32,
    encode,
    encode_dial,
    encode_text,
    encode_u32,
)


def test_frames_round_trip() -> None:
    assert decode(encode(FrameType.DATA, 7, b"abc")) == (FrameType.DATA, 7, b"abc")
    kind, conn_id, payload = decode(encode_u32(FrameType.WINDOW, 9, 65536))
    assert (kind, conn_id, decode_u32(payload)) == (FrameType.WINDOW, 9, 65536)
    kind, conn_id, payload = decode(encode_dial(3, 262144, 5000, "10.43.0.1", 443))
    assert (kind, conn_id) == (FrameType.DIAL, 3)
    assert decode_dial(payload) == (262144, 5000, "10.43.0.1", 443)
    _, _, payload = decode(encode_dial(5, 1, 1, "[fd00::1]", 6443))
    assert decode_dial(payload)[2:] == ("fd00::1", 6443)
    assert encode(FrameType.CLOSE, 1) == b"\x07\x00\x00\x00\x01"
    assert decode(encode_text(FrameType.ERROR, 2, "é" * 2000))[2].decode(errors="ignore")


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"\x04\x00", "shorter than its header"),
        (b"\x09\x00\x00\x00\x01", "unknown frame type 9"),
        (encode(FrameType.DATA, 0, b"x"), "connection id 0"),
        (encode(FrameType.DATA, 1, b""), "data frame of 0 bytes"),
        (encode(FrameType.DATA, 1, b"x" * (MAX_DATA_BYTES + 1)), "data frame of 32769 bytes"),
        (encode(FrameType.CLOSE, 1, b"x"), "close frame with a 1-byte payload"),
        (encode(FrameType.WINDOW, 1, b"xy"), "window frame with a 2-byte payload"),
        (encode(FrameType.DIAL, 1, b"short"), "dial frame with a 5-byte payload"),
        (b"\x04" + b"\x00" * MAX_FRAME_BYTES, "exceeds the maximum"),
    ],
)
def test_malformed_frames_are_protocol_errors(message: bytes, why: str) -> None:
    with pytest.raises(ProtocolError, match=why):
        decode(message)


@pytest.mark.parametrize("address", [b"nohost", b":443", b"host:0", b"host:99999", b"host:http"])
def test_malformed_dial_addresses(address: bytes) -> None:
    with pytest.raises(ProtocolError, match="malformed address"):
        decode_dial(struct.pack("!II", 1, 1) + address)


def test_ca_checksum_is_sha256_hex_of_the_pem() -> None:
    assert ca_checksum(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_agent_config_from_env(tmp_path: Path) -> None:
    env = {
        "SAMPAN_MANAGER_URL": "https://manager:8443",
        "SAMPAN_CA_CHECKSUM": "ab" * 32,
        "SAMPAN_TOKEN": "secret-token",
        "SAMPAN_CLUSTER_NAME": "edge-1",
        "KUBERNETES_SERVICE_HOST": "10.43.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }
    config = AgentConfig.from_env(env)
    assert config.allowed_targets == ("10.43.0.1:443",)
    assert "secret-token" not in repr(config)
    assert AgentConfig.from_env({**env, "KUBERNETES_SERVICE_HOST": "fd00::1"}).allowed_targets == (
        "[fd00::1]:443",
    )
    explicit = AgentConfig.from_env({**env, "SAMPAN_ALLOWED_TARGETS": "a:1, b:2"})
    assert explicit.allowed_targets == ("a:1", "b:2")
    assert config.as_kwargs()["allowed_targets"] == ("10.43.0.1:443",)
    (tmp_path / "token").write_text("sa-token\n")
    (tmp_path / "ca.crt").write_text("PEM\n")
    with_sa = AgentConfig.from_env({**env, "SAMPAN_SERVICEACCOUNT_DIR": str(tmp_path)})
    assert with_sa.cluster_params() == {
        "address": "10.43.0.1:443",
        "caCert": "PEM",
        "token": "sa-token",
    }
    missing = AgentConfig.from_env({**env, "SAMPAN_SERVICEACCOUNT_DIR": str(tmp_path / "none")})
    assert missing.cluster_params() == {"address": "10.43.0.1:443"}
    with pytest.raises(AgentError, match="SAMPAN_TOKEN"):
        AgentConfig.from_env({k: v for k, v in env.items() if k != "SAMPAN_TOKEN"})
