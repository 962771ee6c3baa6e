"""Helpers shared by the Python end-to-end tests (hub_web_test.py, errors_test.py):
files, a clean environment for the fedpod binary, and a `fedpod hub serve` started
and waited for."""
import os
import re
import subprocess
import time


def read(path):
    with open(path) as f:
        return f.read()


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def clean_env(home):
    """os.environ with HOME=home and no hub settings of the machine running the test."""
    env = dict(os.environ, HOME=home)
    for k in ("FEDPOD_HUB", "FEDPOD_TOKEN", "FEDPOD_HUB_CA", "XDG_CONFIG_HOME"):
        env.pop(k, None)
    return env


def public_key(pub_file):
    """The public key of a .pub file `fedpod keys generate` wrote."""
    return re.search(r'public_key: "([^"]{40})"', read(pub_file)).group(1)


def start_hub(fedpod, folder, env, extra_args=()):
    """Starts `fedpod hub serve` on a free loopback port with its data in FOLDER/hub and
    its log in FOLDER/hub.log; returns (process, port) once it listens."""
    port_file = os.path.join(folder, "hub.port")
    log_file = os.path.join(folder, "hub.log")
    with open(log_file, "w") as log:
        hub = subprocess.Popen([fedpod, "hub", "serve", "--data-dir", os.path.join(folder, "hub"), "--listen",
                                "127.0.0.1:0", "--port-file", port_file] + list(extra_args),
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while not os.path.exists(port_file):
        if time.time() > deadline or hub.poll() is not None:
            hub.kill()
            raise RuntimeError("the hub did not start:\n" + read(log_file))
        time.sleep(0.05)
    return hub, int(read(port_file))
