import { describe, expect, it } from "vitest";
import { tenantChoices } from "./tenants";

describe("tenantChoices", () => {
  it("gives a tenant held directly and through the MSP one entry naming both roles", () => {
    const choices = tenantChoices([
      { tenantId: "m", tenantName: "The MSP", role: "owner", via: "direct" },
      { tenantId: "t", tenantName: "Acme", role: "admin", via: "direct" },
      { tenantId: "t", tenantName: "Acme", role: "owner", via: "msp" },
    ]);
    expect(choices).toEqual([
      { tenantId: "m", label: "The MSP (owner)" },
      { tenantId: "t", label: "Acme (admin, owner via MSP)" },
    ]);
  });

  it("says when a tenant is archived", () => {
    const choices = tenantChoices([
      { tenantId: "t", tenantName: "Old", role: "VIEWER", via: "msp", archived: true },
    ]);
    expect(choices).toEqual([{ tenantId: "t", label: "Old (viewer via MSP, archived)" }]);
  });
});
