"""A hypervisor's hands on one VM's files, for archive and restore.

The archive engine (`archive.py`) knows the steps and the journal; each hypervisor knows
where a VM's files are, how to stream them, how to keep the VM from starting and what of it
must come back the same. One class per hypervisor, chosen by the driver's kind.
"""

from __future__ import annotations

from .base import ExternalFile, VmFile, VmFiles, VmFilesError

__all__ = ["ExternalFile", "VmFile", "VmFiles", "VmFilesError"]
