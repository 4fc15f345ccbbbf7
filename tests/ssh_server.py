"""A throwaway OpenSSH server for tests: Debian's sshd on 127.0.0.1 and a free port, its own host key and one client
key (public-key login as the current user, nothing else), stopped afterwards. A networked DVC remote to push to."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

try:
    from services import free_port
except ImportError:  # imported as tests.ssh_server
    from tests.services import free_port

SSHD = "/usr/sbin/sshd"


def sshd_bin() -> str | None:
    found = shutil.which("sshd") or (SSHD if Path(SSHD).is_file() else None)
    return found if found and shutil.which("ssh-keygen") else None


@contextmanager
def ssh_server(workdir: Path, startup_timeout: float = 30) -> Iterator[SimpleNamespace]:
    """Yield (host, port, user, keyfile, known_hosts) of a running sshd that accepts `keyfile`."""
    from tiers import require_integration

    require_integration("an SSH server")
    sshd = sshd_bin()
    if sshd is None:
        raise FileNotFoundError("OpenSSH server not found (apt-get install openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    workdir.chmod(0o700)
    host_key, client_key = workdir / "host_ed25519", workdir / "client_ed25519"
    for key in (host_key, client_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    (workdir / "authorized_keys").write_text((workdir / "client_ed25519.pub").read_text())
    (workdir / "authorized_keys").chmod(0o600)
    port, user = free_port(), getpass.getuser()
    config = workdir / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {workdir / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {workdir / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # its privilege-separation folder (Debian's service makes it)
    known = workdir / "known_hosts"
    known.write_text(
        f"[127.0.0.1]:{port} {(workdir / 'host_ed25519.pub').read_text().split(' ')[0]} "
        f"{(workdir / 'host_ed25519.pub').read_text().split(' ')[1]}\n"
    )
    proc = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL, stderr=open(workdir / "sshd.log", "w")
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited {proc.returncode}: {(workdir / 'sshd.log').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"sshd did not listen on 127.0.0.1:{port} in {startup_timeout} s") from None
                time.sleep(0.2)
        yield SimpleNamespace(
            host="127.0.0.1", port=port, user=user, keyfile=client_key, known_hosts=known, log=workdir / "sshd.log"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
