"""Kernels that start without ipykernel's "Kernel is running over TCP without encryption" warning.

ipykernel (``ipykernel/kernelapp.py``, ``init_sockets``) logs that warning at every start of a kernel
that listens on TCP without CurveZMQ keys in its connection file. The keys are provisioned by the kernel
manager when its ``transport_encryption`` policy is ``"auto"`` (jupyter_client's default is
``"disabled"``) and the kernel spec declares ``"supported_encryption": ["curve"]``, as the specs written
by ``ipykernel install`` (``make install``'s ``saerad`` kernel) and ipykernel's own ``python3`` do. The
kernel's loopback traffic is then encrypted, and the warning has no cause. Two managers start our kernels:

- papermill's, for the pipeline: :func:`kernel_manager_config` (``KernelManager.transport_encryption``);
- jupyter_server's, for ``make lab``: :func:`server_options`, which the Makefile's ``lab`` target adds to
  the ``jupyter lab`` command line (``MappingKernelManager.transport_encryption``, the server-wide policy)::

      python -m saerad.kernel_encryption     # prints the options, or nothing

Both are given only where pyzmq has CurveZMQ (libzmq built with libsodium, as in pyzmq's wheels): elsewhere
jupyter_client refuses the policy, and the kernels start as before, warning included.
"""

from __future__ import annotations

from typing import Any

#: The policy: provision keys when the kernel spec says the kernel supports them ("required" would refuse
#: a kernel spec that does not, such as one installed by an older ipykernel).
POLICY = "auto"


def encryption_available() -> bool:
    """Whether pyzmq can encrypt kernel traffic (CurveZMQ)."""
    import zmq

    return bool(zmq.has("curve"))


def kernel_manager_config() -> dict[str, Any]:
    """traitlets configuration for a jupyter_client ``KernelManager`` (papermill's ``config=``); empty without CurveZMQ."""
    from traitlets.config import Config

    return {"config": Config({"KernelManager": {"transport_encryption": POLICY}})} if encryption_available() else {}


def server_options() -> list[str]:
    """Command-line options of ``jupyter lab`` / ``jupyter server``; none without CurveZMQ."""
    return [f"--MappingKernelManager.transport_encryption={POLICY}"] if encryption_available() else []


if __name__ == "__main__":
    print(" ".join(server_options()))
