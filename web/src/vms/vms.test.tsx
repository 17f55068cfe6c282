import { cleanup, render, screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ActionMenu } from "./ActionMenu";
import { vmActions } from "./vmActions";

afterEach(cleanup);

describe("vmActions", () => {
  it("offers an archived VM only 'Restore and restart'", () => {
    expect(vmActions("ARCHIVED").map((a) => a.label)).toEqual(["Restore and restart"]);
  });
  it("offers archive only where the cloud allows it (off, or a failed archive)", () => {
    const archivable = (["RUNNING", "IDLE", "NOTICED", "OFF", "ARCHIVING", "ARCHIVED", "RESTORING", "ARCHIVE_FAILED", "RESTORE_FAILED"] as const).filter(
      (s) => vmActions(s).some((a) => a.kind === "archive"),
    );
    expect(archivable).toEqual(["OFF", "ARCHIVE_FAILED"]);
  });
  it("offers nothing while a move is under way", () => {
    expect(vmActions("ARCHIVING")).toEqual([]);
    expect(vmActions("RESTORING")).toEqual([]);
  });
});

describe("ActionMenu", () => {
  it("opens from the keyboard, moves with the arrows and picks with Enter", async () => {
    const user = userEvent.setup();
    const onPick = vi.fn();
    render(<ActionMenu vmName="web-1" lifeState="RUNNING" onPick={onPick} />);
    const button = screen.getByRole("button", { name: "Actions for web-1" });
    button.focus();
    await user.keyboard("{ArrowDown}");
    const items = screen.getAllByRole("menuitem");
    expect(items.map((i) => i.textContent)).toEqual(["Shut down", "Power off", "Suspend"]);
    expect(items[0]).toHaveFocus();
    await user.keyboard("{ArrowDown}");
    expect(items[1]).toHaveFocus();
    await user.keyboard("{ArrowUp}{ArrowUp}");
    expect(items[2]).toHaveFocus(); // wraps round
    await user.keyboard("{Enter}");
    expect(onPick).toHaveBeenCalledWith(expect.objectContaining({ action: "SUSPEND" }));
    expect(screen.queryByRole("menu")).toBeNull();
    expect(button).toHaveFocus();
  });

  it("closes on Escape and gives focus back to its button", async () => {
    const user = userEvent.setup();
    render(<ActionMenu vmName="db" lifeState="ARCHIVED" onPick={() => {}} />);
    const button = screen.getByRole("button", { name: "Actions for db" });
    button.focus();
    await user.keyboard("{Enter}");
    expect(screen.getByRole("menuitem", { name: "Restore and restart" })).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("menu")).toBeNull();
    expect(button).toHaveFocus();
  });

  it("opens with Shift+F10, the keyboard's right-click", async () => {
    const user = userEvent.setup();
    render(<ActionMenu vmName="off-1" lifeState="OFF" onPick={() => {}} />);
    screen.getByRole("button", { name: "Actions for off-1" }).focus();
    await user.keyboard("{Shift>}{F10}{/Shift}");
    expect(screen.getAllByRole("menuitem").map((i) => i.textContent)).toEqual([
      "Power on",
      "Archive",
    ]);
  });

  it("says why there is nothing to do while archiving", async () => {
    const user = userEvent.setup();
    render(<ActionMenu vmName="x" lifeState="ARCHIVING" onPick={() => {}} />);
    await user.click(screen.getByRole("button", { name: "Actions for x" }));
    expect(screen.getByRole("menu").textContent).toContain("being archived");
  });
});
