"""The `vm` module: VM life cycle across vSphere, libvirt/KVM and EC2.

Standalone it discovers VMs, keeps their activity history, judges idleness, gives notice and
shuts idle VMs down (see lifecycle.py); it also creates VMs by placement policy. Docked, its
policy comes from the cloud, its inventory and decisions go up (flow mode `metadata` and
above) and the cloud gives the notices and issues the shutdowns; with the `archive` feature
it archives VMs left off into the vault and restores them (archive.py, archiving.py).

The module itself is `module.py`, put together from small parts named for their job
(README.md lists every file).
"""

from .module import VmModule, module_at

__all__ = ["VmModule", "module_at"]
