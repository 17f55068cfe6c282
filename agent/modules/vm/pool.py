"""The module's open drivers, one per endpoint, shared by the worker's rounds, the
commands and the archive feature: a hypervisor session is opened once and kept, and opened
again only when the endpoint's configuration changed (the old one is closed first).
"""

from __future__ import annotations

import json
import threading

from .drivers import open_driver
from .drivers.base import Driver
from .endpoints import Endpoints


class DriverPool:
    def __init__(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self._drivers: dict[str, tuple[str, Driver]] = {}
        self._lock = threading.Lock()

    def driver(self, endpoint: str) -> Driver:
        config = self.endpoints.get(endpoint)
        fingerprint = json.dumps(config, sort_keys=True)
        with self._lock:
            cached = self._drivers.get(endpoint)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            if cached is not None:
                cached[1].close()
            driver = open_driver(endpoint, config)
            self._drivers[endpoint] = (fingerprint, driver)
            return driver

    def close(self) -> None:
        with self._lock:
            for _, driver in self._drivers.values():
                driver.close()
            self._drivers.clear()
