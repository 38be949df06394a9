"""Configuration resolution: defaults < config.yaml < config.yaml.d < environment < flags."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sampan.config import ConfigError, Secret, load_config


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_file(tmp_path: Path) -> None:
    cfg = load_config("server", {}, env={}, default_config_file=tmp_path / "none.yaml")
    assert cfg.data_dir == Path("/var/lib/sampan")
    assert cfg.https_listen_port == 6443
    assert cfg.cluster_cidr == "10.42.0.0/16"
    assert cfg.service_cidr == "10.43.0.0/16"
    assert cfg.cluster_dns == "10.43.0.10"
    assert cfg.write_kubeconfig == Path("/etc/sampan/sampan.yaml")
    assert cfg.kubeconfig_mode == 0o600
    assert cfg.sources == ()


def test_precedence_file_dropin_env_flag(tmp_path: Path) -> None:
    main = write(
        tmp_path / "config.yaml",
        "https-listen-port: 7000\ntls-san: [a.example]\nnode-label: [x=1]\n",
    )
    write(tmp_path / "config.yaml.d" / "20-b.yaml", "https-listen-port: 7002\n")
    write(
        tmp_path / "config.yaml.d" / "10-a.yaml",
        "https-listen-port: 7001\ntls-san+: [b.example]\nnode-label: [y=2]\n",
    )
    write(tmp_path / "config.yaml.d" / "ignored.txt", "bogus: 1\n")
    cfg = load_config("server", {}, env={}, default_config_file=main)
    assert cfg.https_listen_port == 7002  # 20-b after 10-a
    assert cfg.tls_san == ("a.example", "b.example")  # key+ appends
    assert cfg.node_label == ("y=2",)  # plain key replaces
    assert [Path(s).name for s in cfg.sources] == ["config.yaml", "10-a.yaml", "20-b.yaml"]

    cfg = load_config("server", {}, env={"SAMPAN_DATA_DIR": "/srv/s"}, default_config_file=main)
    assert cfg.data_dir == Path("/srv/s")
    cfg = load_config(
        "server",
        {"data_dir": "/flag", "https_listen_port": "8443"},
        env={"SAMPAN_DATA_DIR": "/srv/s"},
        default_config_file=main,
    )
    assert cfg.data_dir == Path("/flag")
    assert cfg.https_listen_port == 8443


def test_config_flag_and_env_choose_the_file(tmp_path: Path) -> None:
    a = write(tmp_path / "a.yaml", "cluster-domain: a.local\n")
    b = write(tmp_path / "b.yaml", "cluster-domain: b.local\n")
    env = {"SAMPAN_CONFIG_FILE": str(a)}
    assert load_config("server", {}, env=env).cluster_domain == "a.local"
    assert load_config("server", {"config": str(b)}, env=env).cluster_domain == "b.local"


def test_explicit_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: configuration file not found"):
        load_config("server", {"config": str(tmp_path / "nope.yaml")}, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bogus-key: 1\n", r"config\.yaml: unknown key 'bogus-key'"),
        (
            "https-listen-port: lots\n",
            r"config\.yaml: key 'https-listen-port': expected an integer",
        ),
        ("debug: maybe\n", r"key 'debug': expected a boolean"),
        ("write-kubeconfig-mode: rw\n", r"key 'write-kubeconfig-mode': expected an octal"),
        ("cluster-cidr: 10.42.0.1/16\n", r"key 'cluster-cidr': 10\.42\.0\.1/16 has host bits set"),
        ("cni: calico\n", r"key 'cni': 'calico' is not one of"),
        ("- a\n- b\n", r"expected a mapping"),
        ("a: [\n", r"malformed YAML"),
        ("https-listen-port+: 1\n", r"'\+' appends to lists only"),
        ("kube-scheduler-arg: [novalue]\n", r"kube-scheduler-arg: 'novalue' is not of the form"),
    ],
)
def test_bad_config_file_is_one_line_naming_key_and_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path / "config.yaml", text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config("server", {}, env={}, default_config_file=path)
    assert "\n" not in str(info.value)
    if "unknown key" in message or "expected" in message:
        assert str(path) in str(info.value)


def test_unreadable_config_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.mkdir()  # a directory where the file should be: reading fails
    with pytest.raises(ConfigError, match="cannot read configuration file"):
        load_config("server", {"config": str(path)}, env={})


def test_secrets_never_in_repr_or_errors(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        "token: supersecret-token\ndatastore-endpoint: postgres://u:hunter2@db/sampan\n",
    )
    cfg = load_config("server", {}, env={}, default_config_file=path)
    assert cfg.token == Secret("supersecret-token")
    assert cfg.token.reveal() == "supersecret-token"
    text = repr(cfg) + str(cfg)
    assert "supersecret" not in text and "hunter2" not in text
    bad = write(tmp_path / "bad.yaml", "token: [hunter2]\n")
    with pytest.raises(ConfigError) as info:
        load_config("server", {}, env={}, default_config_file=bad)
    assert "hunter2" not in str(info.value)


def test_rke2_style_file_is_accepted(tmp_path: Path) -> None:
    path = write(
        tmp_path / "config.yaml",
        """\
tls-san:
- lb.k8s.lan
write-kubeconfig-mode: "0600"
disable-cloud-controller: true
debug: true
kube-scheduler-arg:
- v=4
- bind-address=0.0.0.0
kube-controller-manager-arg:
- bind-address=0.0.0.0
etcd-expose-metrics: true
""",
    )
    cfg = load_config("server", {}, env={}, default_config_file=path)
    assert cfg.tls_san == ("lb.k8s.lan",)
    assert cfg.debug is True
    assert cfg.component_args("kube-scheduler-arg") == {"v": "4", "bind-address": "0.0.0.0"}


def test_agent_requires_server_and_token_and_ignores_server_only_keys(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yaml", "tls-san: [x]\nnode-name: n1\n")
    with pytest.raises(ConfigError, match="needs --server"):
        load_config("agent", {}, env={}, default_config_file=path)
    cfg = load_config(
        "agent",
        {},
        env={"SAMPAN_URL": "https://h:6443", "SAMPAN_TOKEN": "t"},
        default_config_file=path,
    )
    assert cfg.node_name == "n1"
    assert cfg.server == "https://h:6443"
    assert not hasattr(cfg, "tls_san") or cfg.tls_san == ()


def test_comma_lists_and_env_types(tmp_path: Path) -> None:
    cfg = load_config(
        "server",
        {"tls_san": ["a,b", "c"]},
        env={"SAMPAN_DEBUG": "true"},
        default_config_file=tmp_path / "none.yaml",
    )
    assert cfg.tls_san == ("a", "b", "c")
    assert cfg.debug is True
    with pytest.raises(ConfigError, match="environment variable SAMPAN_DEBUG"):
        load_config(
            "server",
            {},
            env={"SAMPAN_DEBUG": "perhaps"},
            default_config_file=tmp_path / "none.yaml",
        )


def test_secret_defaults_are_secrets(tmp_path: Path) -> None:
    cfg = load_config("server", {}, env={}, default_config_file=tmp_path / "none.yaml")
    assert isinstance(cfg.datastore_endpoint, Secret)
    assert cfg.datastore_endpoint.reveal() == ""
    assert isinstance(cfg.token, Secret)


def test_local_storage_path_and_disable_local_storage(tmp_path: Path) -> None:
    from sampan.supervisor.server import controller_manager_options

    none = tmp_path / "none.yaml"
    cfg = load_config("server", {"data-dir": "/srv/s"}, env={}, default_config_file=none)
    assert cfg.local_storage_path == Path("/srv/s/storage")
    options = controller_manager_options(cfg)
    assert options.local_storage_path == "/srv/s/storage"
    assert options.enabled("local-path-provisioner")
    assert options.enabled("persistentvolume-binder")
    cfg = load_config(
        "server",
        {"default-local-storage-path": "/data/vols", "disable": ["local-storage"]},
        env={},
        default_config_file=none,
    )
    assert cfg.local_storage_path == Path("/data/vols")
    options = controller_manager_options(cfg)
    assert not options.enabled("local-path-provisioner")
    assert options.enabled("persistentvolume-binder")
    agent = load_config(
        "agent",
        {"default-local-storage-path": "/data/vols", "server": "https://s:6443", "token": "t"},
        env={},
        default_config_file=none,
    )
    assert agent.local_storage_path == Path("/data/vols")


def test_cluster_name_names_every_host_resource(tmp_path: Path) -> None:
    none = tmp_path / "none.yaml"
    default = load_config("server", {}, env={}, default_config_file=none).host_names
    assert (default.bridge, default.vxlan_device, default.dns_interface) == (
        "cni0",
        "sampan.1",
        "sampan-dns",
    )
    assert (default.proxy_chain_prefix, default.cgroup_root, default.vxlan_vni) == (
        "KUBE-",
        "/kubepods",
        1,
    )
    assert default.dns_address == "169.254.20.10"
    named = load_config(
        "agent",
        {"cluster_name": "b2", "server": "https://x:6443", "token": "t", "data_dir": "/srv/b2"},
        env={},
        default_config_file=none,
    ).host_names
    assert (named.bridge, named.vxlan_device, named.dns_interface) == (
        "cni-b2",
        "sampan-b2",
        "sdns-b2",
    )
    assert (named.proxy_chain_prefix, named.network_chain_prefix) == ("Kb2-", "SAMPAN-b2-")
    assert named.cgroup_root == "/kubepods-b2"
    assert named.vxlan_vni != 1 and named.dns_address != "169.254.20.10"
    assert named.dns_address.startswith("169.254.20.")
    env = {"SAMPAN_CLUSTER_NAME": "c", "SAMPAN_DATA_DIR": "/srv/c"}
    flags = {"node_local_dns_address": "169.254.21.1"}
    other = load_config("server", flags, env=env, default_config_file=none).host_names
    assert other.dns_address == "169.254.21.1" and other.bridge == "cni-c"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"cluster_name": "Big"}, "cluster-name: 'Big' must be 1-6 characters"),
        ({"cluster_name": "toolong7"}, "cluster-name: 'toolong7'"),
        ({"cluster_name": "1a"}, "starting with a letter"),
        ({"node_local_dns_address": "fe80::1"}, "not an IPv4 address"),
        ({"node_local_dns_address": "127.0.0.1"}, "cannot hold a listening DNS server"),
    ],
)
def test_cluster_name_and_dns_address_are_checked(
    tmp_path: Path, flags: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config("server", flags, env={}, default_config_file=tmp_path / "none.yaml")


def test_a_named_cluster_needs_its_own_data_dir_and_kubeconfig(tmp_path: Path) -> None:
    from sampan.config import check_server_files

    none = tmp_path / "none.yaml"
    with pytest.raises(ConfigError, match="give the cluster its own --data-dir"):
        load_config("server", {"cluster_name": "b"}, env={}, default_config_file=none)
    flags = {"cluster_name": "b", "data_dir": str(tmp_path / "b")}
    config = load_config("server", flags, env={}, default_config_file=none)
    with pytest.raises(ConfigError, match="give the cluster its own --write-kubeconfig"):
        check_server_files(config)
    flags["write_kubeconfig"] = str(tmp_path / "b.yaml")
    check_server_files(load_config("server", flags, env={}, default_config_file=none))
