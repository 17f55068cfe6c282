/** The actions a VM's life state allows, as the cloud's VM module rules them
 * (cloud/modules/vm/archive.py: archive from OFF or ARCHIVE_FAILED, restore from ARCHIVED or
 * RESTORE_FAILED; power while the VM is on the hypervisor). The cloud still decides: a
 * refusal comes back as VmLifeStateForbids and is shown in words. */
import type { PowerAction, VmLifeState } from "../gql/graphql";

export type VmAction =
  | { kind: "power"; action: PowerAction; label: string; danger: boolean }
  | { kind: "archive"; label: string; danger: boolean }
  | { kind: "restore"; label: string; danger: boolean };

const SHUTDOWN: VmAction = { kind: "power", action: "SHUTDOWN", label: "Shut down", danger: true };
const POWER_OFF: VmAction = { kind: "power", action: "POWER_OFF", label: "Power off", danger: true };
const SUSPEND: VmAction = { kind: "power", action: "SUSPEND", label: "Suspend", danger: true };
const POWER_ON: VmAction = { kind: "power", action: "POWER_ON", label: "Power on", danger: false };
const ARCHIVE: VmAction = { kind: "archive", label: "Archive", danger: true };

export function vmActions(lifeState: VmLifeState): VmAction[] {
  switch (lifeState) {
    case "RUNNING":
    case "IDLE":
    case "NOTICED":
      return [SHUTDOWN, POWER_OFF, SUSPEND];
    case "OFF":
      return [POWER_ON, ARCHIVE];
    case "ARCHIVE_FAILED":
      return [POWER_ON, { ...ARCHIVE, label: "Archive again" }];
    case "ARCHIVED":
      return [{ kind: "restore", label: "Restore and restart", danger: false }];
    case "RESTORE_FAILED":
      return [{ kind: "restore", label: "Restore again", danger: false }];
    case "ARCHIVING":
    case "RESTORING":
      return [];
  }
}

/** Why the menu is empty, in words. */
export function noActionReason(lifeState: VmLifeState): string {
  if (lifeState === "ARCHIVING") return "No action while the VM is being archived.";
  if (lifeState === "RESTORING") return "No action while the VM is being restored.";
  return "No action is possible in this state.";
}

export const LIFE_LABEL: Record<VmLifeState, string> = {
  RUNNING: "Running",
  IDLE: "Idle",
  NOTICED: "Owner noticed",
  OFF: "Off",
  ARCHIVING: "Archiving",
  ARCHIVED: "Archived",
  RESTORING: "Restoring",
  ARCHIVE_FAILED: "Archive failed",
  RESTORE_FAILED: "Restore failed",
};
