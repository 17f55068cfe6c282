/** A policy document as a form: its leaves (the values a person edits) at dotted paths, the
 * document built back from what was typed, the cloud's problems placed at their fields, and
 * the difference between two versions. Pure functions, so the page only renders. */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

/** How a leaf is edited: a checkbox, a number, a line of text, or JSON for the rest (lists,
 * empty maps, and values the document leaves unset). */
export type LeafKind = "boolean" | "number" | "string" | "json";

export interface Leaf {
  path: string;
  kind: LeafKind;
  /** What the form starts with: the checkbox's state or the input's text. */
  initial: boolean | string;
}

export interface Form {
  leaves: Leaf[];
  /** The nested objects, where a problem about a whole group (`archive`) is shown. */
  groups: string[];
}

function isObject(value: Json | undefined): value is JsonObject {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function kindOf(value: Json): LeafKind {
  if (typeof value === "boolean") return "boolean";
  if (typeof value === "number") return "number";
  if (typeof value === "string") return "string";
  return "json";
}

function join(prefix: string, key: string): string {
  return prefix ? `${prefix}.${key}` : key;
}

export function formOf(document: JsonObject): Form {
  const leaves: Leaf[] = [];
  const groups: string[] = [];
  const walk = (object: JsonObject, prefix: string) => {
    for (const [key, value] of Object.entries(object)) {
      const path = join(prefix, key);
      if (isObject(value) && Object.keys(value).length > 0) {
        groups.push(path);
        walk(value, path);
        continue;
      }
      const kind = kindOf(value);
      const initial =
        kind === "boolean"
          ? (value as boolean)
          : kind === "json"
            ? value === null
              ? ""
              : JSON.stringify(value)
            : String(value);
      leaves.push({ path, kind, initial });
    }
  };
  walk(document, "");
  return { leaves, groups };
}

export type Built = { ok: true; document: JsonObject } | { ok: false; errors: Record<string, string> };

/** The document from the form's values, or the fields whose text is not of their kind. */
export function build(leaves: Leaf[], values: Record<string, boolean | string>): Built {
  const document: JsonObject = {};
  const errors: Record<string, string> = {};
  for (const leaf of leaves) {
    const raw = values[leaf.path] ?? leaf.initial;
    let value: Json;
    if (leaf.kind === "boolean") {
      value = raw === true;
    } else if (leaf.kind === "number") {
      const text = String(raw).trim();
      value = Number(text);
      if (text === "" || !Number.isFinite(value)) {
        errors[leaf.path] = "Enter a number.";
        continue;
      }
    } else if (leaf.kind === "string") {
      value = String(raw);
    } else {
      const text = String(raw).trim();
      try {
        value = text === "" ? null : (JSON.parse(text) as Json);
      } catch {
        errors[leaf.path] =
          'Enter JSON: a list like ["a", "b"], a map like {"cpu": "peak"}, or leave it empty for none.';
        continue;
      }
    }
    put(document, leaf.path.split("."), value);
  }
  return Object.keys(errors).length ? { ok: false, errors } : { ok: true, document };
}

function put(object: JsonObject, keys: string[], value: Json) {
  const [head, ...rest] = keys;
  if (head === undefined) return;
  if (rest.length === 0) {
    object[head] = value;
    return;
  }
  const inner = object[head];
  const next: JsonObject = isObject(inner) ? inner : {};
  object[head] = next;
  put(next, rest, value);
}

export interface Problem {
  path: string;
  message: string;
}

export interface Placed {
  /** Messages by the path of the field they belong to; a group's (`archive: ...`) at its
   * first field. */
  at: Record<string, string[]>;
  /** Messages about the document as a whole, or a place the form does not have. */
  general: string[];
}

/** Each problem at the deepest field that holds its path (`signals.0` at `signals`); a
 * problem of a whole group at the group's first field, naming the group; else with the
 * general ones (the document as a whole, or a place the form does not have). */
export function place(problems: Problem[], form: Form): Placed {
  const leaves = form.leaves.map((l) => l.path);
  const holds = (p: string, path: string) => path === p || path.startsWith(`${p}.`);
  const at: Record<string, string[]> = {};
  const general: string[] = [];
  for (const problem of problems) {
    const leaf = leaves.filter((p) => holds(p, problem.path)).sort((a, b) => b.length - a.length)[0];
    const group = form.groups
      .filter((g) => holds(g, problem.path))
      .sort((a, b) => b.length - a.length)[0];
    const first = group === undefined ? undefined : leaves.find((p) => p.startsWith(`${group}.`));
    if (leaf !== undefined) {
      (at[leaf] ??= []).push(problem.message);
    } else if (group !== undefined && first !== undefined) {
      (at[first] ??= []).push(`${label(group)}: ${problem.message}`);
    } else {
      general.push(problem.path ? `${label(problem.path)}: ${problem.message}` : problem.message);
    }
  }
  return { at, general };
}

export interface Change {
  path: string;
  change: "added" | "removed" | "changed";
  before?: string;
  after?: string;
}

function scalars(value: Json, prefix: string, out: Map<string, string>) {
  if (Array.isArray(value) && value.length > 0) {
    value.forEach((v, i) => scalars(v, join(prefix, String(i)), out));
  } else if (isObject(value) && (Object.keys(value).length > 0 || prefix === "")) {
    // The document itself is walked even when empty: "" is no setting of its own.
    for (const [k, v] of Object.entries(value)) scalars(v, join(prefix, k), out);
  } else {
    out.set(prefix, JSON.stringify(value));
  }
}

/** What changed from one version's document to another's, value by value, in the order
 * the paths appear (the older document's first, then what only the newer one has). */
export function diff(before: Json, after: Json): Change[] {
  const a = new Map<string, string>();
  const b = new Map<string, string>();
  scalars(before, "", a);
  scalars(after, "", b);
  const changes: Change[] = [];
  for (const [path, value] of a) {
    const other = b.get(path);
    if (other === undefined) changes.push({ path, change: "removed", before: value });
    else if (other !== value) changes.push({ path, change: "changed", before: value, after: other });
  }
  for (const [path, value] of b) {
    if (!a.has(path)) changes.push({ path, change: "added", after: value });
  }
  return changes;
}

/** A path as words for a label: `archive.min_vm_gb` is "archive › min vm gb". */
export function label(path: string): string {
  return path.split(".").map((p) => p.replaceAll("_", " ")).join(" › ");
}
