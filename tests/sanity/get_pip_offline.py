"""Offline stand-in for the get-pip.py bootstrap script that ansible-test downloads.

ansible-test creates each sanity test's virtual environment without pip and then runs
a get-pip.py script fetched from the internet. The build machines only reach the
package registries, so tests/bootstrap.sh installs this file in ansible-test's cache
under the name ansible-test looks for. It installs pip with the standard library's
ensurepip and then runs ``pip install`` with the arguments ansible-test passed.

Both steps run in child processes: ensurepip run in-process leaves pip's configuration
(index, CA file) out of the following pip call.
"""

import subprocess
import sys

_DROPPED = {"--no-setuptools", "--no-wheel"}


def main() -> int:
    args = [arg for arg in sys.argv[1:] if arg not in _DROPPED]
    subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True,
                   stdout=subprocess.DEVNULL)
    if args and args[0] != "install":
        args = ["install", *args]
    return subprocess.run([sys.executable, "-m", "pip", *args], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
