"""Physical machines' power through their BMC's DMTF Redfish interface (httpx).

A hypervisor host found idle (no powered-on VM for the whole first period) is reported
always; it is powered off only where the endpoint maps it to a BMC:
`"bmcs": {"<host name or id>": {"url": "https://bmc", "system": "<id>", "user": ...,
"password": ..., "verify_tls": true}}`. A BMC applies a reset some seconds after it
accepts it, so the state is polled until it changes.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from ....protocol.vm import PowerAction
from .base import DriverError, LoginFailed, Unreachable

RESETS = {
    PowerAction.SHUTDOWN: "GracefulShutdown",
    PowerAction.POWER_OFF: "ForceOff",
    PowerAction.POWER_ON: "On",
}
STATES = {"On": "on", "Off": "off", "PoweringOn": "on", "PoweringOff": "off"}


class RedfishPower:
    def __init__(self, name: str, config: dict[str, Any]) -> None:
        if not config.get("url") or not config.get("system"):
            raise DriverError("bad_config", f"{name}: a BMC needs url and system")
        self.name = name
        self.system = f"/redfish/v1/Systems/{config['system']}"
        self.timeout_s = float(config.get("power_timeout_s", 120))
        self.http = httpx.Client(
            base_url=str(config["url"]).rstrip("/"),
            auth=(str(config.get("user", "")), str(config.get("password", ""))),
            verify=bool(config.get("verify_tls", True)),
            timeout=float(config.get("timeout_s", 30)),
        )

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise Unreachable(f"{self.name}: cannot reach its BMC: {e}") from e
        if response.status_code in (401, 403):
            raise LoginFailed(f"{self.name}: the BMC refused the user name or password")
        if response.status_code == 404:
            raise DriverError("not_found", f"{self.name}: the BMC has no {path}")
        if response.status_code >= 400:
            raise DriverError(
                "bmc_error",
                f"{self.name}: the BMC answered {response.status_code}: {response.text[:200]}",
            )
        return response

    def state(self) -> str:
        body = self._request("GET", self.system).json()
        return STATES.get(str(body.get("PowerState")), "off")

    def power(self, action: PowerAction) -> str:
        reset = RESETS.get(action)
        if reset is None:
            raise DriverError("not_supported", f"{self.name}: a BMC does not {action.value}")
        want = "on" if action == PowerAction.POWER_ON else "off"
        if self.state() == want:
            return want
        self._request(
            "POST", f"{self.system}/Actions/ComputerSystem.Reset", json={"ResetType": reset}
        )
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.state() == want:
                return want
            time.sleep(0.5)
        raise DriverError("timeout", f"{self.name}: still not {want} after {self.timeout_s:g} s")
