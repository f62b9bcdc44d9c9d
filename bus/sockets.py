"""Socket set-up shared by the proxy, nodes, tools and benchmarks: endpoints, high-water
marks, and CURVE encryption for buses that leave the machine.

Endpoints default to ``ipc://`` sockets in the run directory. A ``tcp://`` endpoint whose host
is not a loopback address is refused unless CURVE keys are configured (``rtchat keys gen``):
then the proxy is a CURVE server that admits only clients whose public key is in
``keys_dir/authorized``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import tempfile
from pathlib import Path

import zmq
import zmq.auth

from rtchat.configs import ConfigError
from rtchat.configs.schema import BusConfig

IPC_PATH_MAX = 100  # sun_path holds 108 bytes; keep a margin


def default_endpoints(run_dir: Path) -> tuple[str, str]:
    """(publisher endpoint, subscriber endpoint) as ipc sockets in the run dir, or in a short
    temporary folder when the run dir's path is too long for a unix socket."""
    base = Path(run_dir).resolve()
    if len(str(base / "bus-sub.ipc")) > IPC_PATH_MAX:
        base = Path(tempfile.mkdtemp(prefix="rtchat-"))
    return f"ipc://{base / 'bus-pub.ipc'}", f"ipc://{base / 'bus-sub.ipc'}"


def tcp_host(endpoint: str) -> str | None:
    if not endpoint.startswith("tcp://"):
        return None
    rest = endpoint[len("tcp://") :]
    host = rest.rsplit(":", 1)[0]
    return host.strip("[]")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_security(cfg: BusConfig) -> None:
    """Refuse endpoints that leave the machine unless CURVE keys are configured."""
    for key in ("pub_endpoint", "sub_endpoint"):
        host = tcp_host(getattr(cfg, key))
        if host is None or is_loopback(host):
            continue
        if not cfg.curve.keys_dir:
            raise ConfigError(
                f"bus.{key}: {getattr(cfg, key)} is reachable from other hosts; set bus.curve.keys_dir "
                "(create keys with `rtchat keys gen DIR`) or use ipc:// or tcp://127.0.0.1"
            )
    if cfg.curve.keys_dir:
        keys = Path(cfg.curve.keys_dir)
        needed = [keys / "server.key", keys / f"{cfg.curve.client_name}.key_secret"]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise ConfigError(f"bus.curve.keys_dir: missing {', '.join(missing)}; create them with `rtchat keys gen DIR`")


def check_ports_free(cfg: BusConfig) -> None:
    """Refuse ``tcp://`` endpoints whose port another process already holds: the proxy could not
    bind them, and the session would wait for a bus that never comes up."""
    for key in ("pub_endpoint", "sub_endpoint"):
        endpoint = getattr(cfg, key)
        host = tcp_host(endpoint)
        port = endpoint.rsplit(":", 1)[-1]
        if host is None or not port.isdigit():  # not tcp, or a port ZeroMQ picks (tcp://HOST:*)
            continue
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                None if host == "*" else host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
            )[0]
        except (socket.gaierror, UnicodeError):  # an interface name (tcp://eth0:5555): ZeroMQ resolves it
            continue
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as ZeroMQ binds: TIME_WAIT is no obstacle
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = f"port {port} is in use by another process (`ss -ltnp 'sport = :{port}'` names it); choose a free port"
                else:
                    why = f"cannot listen there ({exc.strerror}); choose an address and port this machine can listen on"
                raise ConfigError(
                    f"bus.{key}: {endpoint}: {why}, or leave bus.{key} empty for an ipc:// socket in the run directory"
                ) from None


def generate_keys(keys_dir: Path, clients: tuple[str, ...] = ("client",)) -> None:
    """Create a server keypair, client keypairs, and authorize the clients' public keys."""
    keys_dir = Path(keys_dir)
    authorized = keys_dir / "authorized"
    authorized.mkdir(parents=True, exist_ok=True)
    os.chmod(keys_dir, 0o700)
    zmq.auth.create_certificates(keys_dir, "server")
    for name in clients:
        public, _ = zmq.auth.create_certificates(keys_dir, name)
        (authorized / f"{name}.key").write_bytes(Path(public).read_bytes())


RECONNECT_MS = 20  # ZeroMQ's default, 100 ms, is up to 100 ms more of a proxy restart's loss


def tune(sock: zmq.Socket, cfg: BusConfig) -> zmq.Socket:
    sock.setsockopt(zmq.SNDHWM, cfg.hwm)
    sock.setsockopt(zmq.RCVHWM, cfg.hwm)
    sock.setsockopt(zmq.LINGER, 1000)
    sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_MS)
    return sock


def curve_client(sock: zmq.Socket, cfg: BusConfig) -> None:
    if not cfg.curve.keys_dir:
        return
    keys = Path(cfg.curve.keys_dir)
    server_public, _ = zmq.auth.load_certificate(keys / "server.key")
    public, secret = zmq.auth.load_certificate(keys / f"{cfg.curve.client_name}.key_secret")
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def curve_server(sock: zmq.Socket, cfg: BusConfig) -> None:
    keys = Path(cfg.curve.keys_dir)
    public, secret = zmq.auth.load_certificate(keys / "server.key_secret")
    sock.curve_secretkey = secret
    sock.curve_publickey = public
    sock.curve_server = True


def connect(ctx: zmq.Context, kind: int, endpoint: str, cfg: BusConfig) -> zmq.Socket:
    sock = tune(ctx.socket(kind), cfg)
    curve_client(sock, cfg)
    sock.connect(endpoint)
    return sock
