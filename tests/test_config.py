from __future__ import annotations

from pathlib import Path

import pytest

from cicd.config import load_settings
from cicd.errors import UsageError


def test_defaults_bind_loopback() -> None:
    settings = load_settings(environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8470
    assert settings.log_limit_bytes == 100_000_000
    assert settings.seconds(settings.retention.max_age) == 30 * 86400


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "cicd.toml"
    path.write_text('[server]\nport = 9000\nserver_names = ["ci.example.test"]\n'
                    '[runs]\ngrace = "3s"\n')
    settings = load_settings(str(path), environ={"CICD_RUNS_GRACE": "5s",
                                                 "CICD_SERVER_PORT": "9100"},
                             overrides={"server.port": 9200, "storage.db": None})
    assert settings.server.port == 9200
    assert settings.server.server_names == ["ci.example.test"]
    assert settings.seconds(settings.runs.grace) == 5.0


@pytest.mark.parametrize(("text", "message"), [
    ("[server]\nprot = 1\n", "server: unknown key 'prot'; did you mean 'port'?"),
    ("[runs]\ngrace = \"soon\"\n", "runs.grace = 'soon': expected a duration"),
    ("[storage]\nlog_limit = \"lots\"\n", "storage.log_limit = 'lots': expected a size"),
    ("[runs]\nexecutor = \"k8s\"\n", "runs.executor = 'k8s': expected docker or local"),
    ("[server\n", "is not valid TOML"),
    ("[sceduling]\npolicy = \"fifo\"\n",
     "the top level: unknown key 'sceduling'; did you mean 'scheduling'?"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\nreserve_cpus = 1\n',
     "nodes[0]: unknown key 'reserve_cpus'; did you mean 'reserve_cpu'?"),
    ('[scheduling.pools.x]\npolcy = "fifo"\n', "unknown key 'polcy'; did you mean 'policy'?"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\nlabels = { pool = 3 }\n',
     "nodes[0].labels[...]: expected a string, got an integer"),
    ("[server]\nport = 70000\n", "server.port: expected an integer at most 65535"),
    ('[scheduling]\npolicy = "rr"\n', "bad.toml: scheduling.policy = 'rr': expected fifo"),
])
def test_invalid_configuration_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_settings(str(path), environ={})
    assert message in str(caught.value)


def test_invalid_environment_value_names_its_variable() -> None:
    with pytest.raises(UsageError) as caught:
        load_settings(environ={"CICD_SCHEDULING_POLICY": "rr"})
    assert str(caught.value) == ("scheduling.policy = 'rr': expected fifo, binpack or spread "
                                 "(from the environment variable CICD_SCHEDULING_POLICY)")
    with pytest.raises(UsageError) as caught:
        load_settings(environ={"CICD_SERVER_PORT": "70000"})
    assert "(from the environment variable CICD_SERVER_PORT)" in str(caught.value)


def test_invalid_environment_value() -> None:
    with pytest.raises(UsageError, match="CICD_SERVER_PORT='http': expected a whole number"):
        load_settings(environ={"CICD_SERVER_PORT": "http"})


def test_nodes_and_scheduling_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "cicd.toml"
    path.write_text('[scheduling]\npolicy = "binpack"\nbackfill = true\n'
                    '[scheduling.pools.fast]\npolicy = "spread"\n'
                    '[[nodes]]\nname = "a"\nhost = "unix:///run/a.sock"\n'
                    'labels = { pool = "fast" }\ncpu = 4\nreserve_memory = "1G"\n'
                    '[[nodes]]\nname = "b"\nhost = "ssh://ci@builder"\n')
    settings = load_settings(str(path), environ={"CICD_SCHEDULING_POLICY": "spread"})
    assert settings.scheduling.policy == "spread"
    assert settings.scheduling.pools["fast"].policy == "spread"
    assert [node.name for node in settings.nodes] == ["a", "b"]
    assert settings.nodes[0].labels == {"pool": "fast"}
    assert settings.cpu_millis(settings.nodes[0].cpu) == 4000
    assert settings.memory_bytes(settings.nodes[0].reserve_memory) == 1_000_000_000
    assert settings.cpu_millis(settings.nodes[1].cpu) == 0


@pytest.mark.parametrize(("text", "message"), [
    ('[scheduling]\npolicy = "random"\n', "scheduling.policy = 'random': expected fifo"),
    ('[scheduling.pools.x]\npolicy = "lifo"\n', "scheduling.pools.x.policy = 'lifo'"),
    ('[[nodes]]\nname = "a"\nhost = "http://a"\n', "host = 'http://a': expected unix://"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\n[[nodes]]\nname = "a"\nhost = "unix:///b"\n',
     "[[nodes]] number 2 ('a'): each node needs a name of its own"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\ncpu = "lots"\n',
     "[[nodes]] number 1 ('a'): cpu = 'lots'"),
    ('[[nodes]]\nname = "a"\nhost = "tcp://127.0.0.1"\n', "expected tcp://HOST:PORT with a port"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\nlabels = { "po ol" = "x" }\n',
     "label 'po ol': use up to 63"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\ncpu = 4\nreserve_cpu = "5"\n',
     "reserve_cpu = '5' is not below cpu = 4"),
    ('[scheduling]\nnode_lost_after = "30"\n', "scheduling.node_lost_after = '30': expected"),
    ('[[nodes]]\nname = "a"\nhost = "tcp://a:2376"\ntls_ca = "/missing/ca.pem"\n',
     "tls_ca = '/missing/ca.pem': no such file"),
    ('[scheduling]\nbreaker_error_rate = 1.5\n', "breaker_error_rate = 1.5"),
    ('[[nodes]]\nname = "bad name/x"\nhost = "unix:///a"\n',
     "name = 'bad name/x': use up to 63 letters"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\ncpu = 0\n',
     "cpu = 0: expected a CPU amount greater than 0, found 0; leave cpu out"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\nmemory = "0"\n',
     "memory = '0': expected a memory size greater than 0"),
    ('[[nodes]]\nname = "a"\nhost = "unix:///a"\ncpu = 2\nreserve_cpu = 4\n',
     "reserve_cpu = 4 is not below cpu = 2,"),
])
def test_invalid_scheduling_settings(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "cicd.toml"
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        load_settings(str(path), environ={})
    assert message in str(caught.value)
