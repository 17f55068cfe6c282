import { describe, expect, it } from "vitest";
import { build, diff, formOf, label, place } from "./document";

const DOC = {
  idle_days: 90,
  action: "shutdown",
  default_contact: null,
  signals: ["cpu", "disk"],
  statistics: {},
  archive: { never: false, min_vm_gb: null, max_vm_gb: 10, storage: { kind: "directory" } },
};

describe("formOf", () => {
  it("lays every leaf out at its dotted path, with the kind of input it takes", () => {
    const form = formOf(DOC);
    expect(form.leaves.map((l) => [l.path, l.kind, l.initial])).toEqual([
      ["idle_days", "number", "90"],
      ["action", "string", "shutdown"],
      ["default_contact", "json", ""],
      ["signals", "json", '["cpu","disk"]'],
      ["statistics", "json", "{}"],
      ["archive.never", "boolean", false],
      ["archive.min_vm_gb", "json", ""],
      ["archive.max_vm_gb", "number", "10"],
      ["archive.storage.kind", "string", "directory"],
    ]);
    expect(form.groups).toEqual(["archive", "archive.storage"]);
  });
});

describe("build", () => {
  it("gives back the same document when nothing was touched", () => {
    const form = formOf(DOC);
    expect(build(form.leaves, {})).toEqual({ ok: true, document: DOC });
  });

  it("takes the typed values in their kinds", () => {
    const form = formOf(DOC);
    const built = build(form.leaves, {
      idle_days: "30",
      "archive.never": true,
      "archive.min_vm_gb": "2.5",
      signals: '["cpu"]',
      default_contact: "ops@example.com",
    });
    // A JSON field that is not JSON is not silently a string: it is an error at the field.
    expect(built.ok).toBe(false);
    if (!built.ok) expect(Object.keys(built.errors)).toEqual(["default_contact"]);
    const fixed = build(form.leaves, {
      idle_days: "30",
      "archive.never": true,
      "archive.min_vm_gb": "2.5",
      signals: '["cpu"]',
      default_contact: '"ops@example.com"',
    });
    expect(fixed).toEqual({
      ok: true,
      document: {
        ...DOC,
        idle_days: 30,
        signals: ["cpu"],
        default_contact: "ops@example.com",
        archive: { ...DOC.archive, never: true, min_vm_gb: 2.5 },
      },
    });
  });

  it("says at the field when a number is not one", () => {
    const form = formOf(DOC);
    expect(build(form.leaves, { idle_days: "ninety", "archive.max_vm_gb": "" })).toEqual({
      ok: false,
      errors: { idle_days: "Enter a number.", "archive.max_vm_gb": "Enter a number." },
    });
  });
});

describe("place", () => {
  const form = formOf(DOC);
  it("puts each of the cloud's problems at its field, a list item's at its list", () => {
    const placed = place(
      [
        { path: "idle_days", message: "Input should be greater than or equal to 1" },
        { path: "signals.1", message: "Input should be 'cpu', 'disk' or 'net'" },
        { path: "archive.storage.kind", message: "Input should be 'directory' or 's3'" },
      ],
      form,
    );
    expect(placed).toEqual({
      at: {
        idle_days: ["Input should be greater than or equal to 1"],
        signals: ["Input should be 'cpu', 'disk' or 'net'"],
        "archive.storage.kind": ["Input should be 'directory' or 's3'"],
      },
      general: [],
    });
  });

  it("puts a group's problem at the group's first field, naming the group", () => {
    const placed = place([{ path: "archive", message: "min_vm_gb is not below max_vm_gb" }], form);
    expect(placed.at).toEqual({ "archive.never": ["archive: min_vm_gb is not below max_vm_gb"] });
  });

  it("keeps the document's own problems, and places the form lacks, general", () => {
    const placed = place(
      [
        { path: "", message: "notice of 48 h is not shorter than the idle period" },
        { path: "budget", message: "Extra inputs are not permitted" },
      ],
      form,
    );
    expect(placed).toEqual({
      at: {},
      general: [
        "notice of 48 h is not shorter than the idle period",
        "budget: Extra inputs are not permitted",
      ],
    });
  });
});

describe("diff", () => {
  it("names each value that changed, went or came, in the documents' order", () => {
    const before = { a: 1, list: ["x", "y"], nested: { keep: true, old: "o" } };
    const after = { a: 2, list: ["x"], nested: { keep: true, fresh: 3 } };
    expect(diff(before, after)).toEqual([
      { path: "a", change: "changed", before: "1", after: "2" },
      { path: "list.1", change: "removed", before: '"y"' },
      { path: "nested.old", change: "removed", before: '"o"' },
      { path: "nested.fresh", change: "added", after: "3" },
    ]);
  });

  it("finds nothing between equal documents, and tells null from a missing key", () => {
    expect(diff(DOC, structuredClone(DOC))).toEqual([]);
    expect(diff({ a: null }, {})).toEqual([{ path: "a", change: "removed", before: "null" }]);
  });
});

it("labels a path in words", () => {
  expect(label("archive.min_vm_gb")).toBe("archive › min vm gb");
});
