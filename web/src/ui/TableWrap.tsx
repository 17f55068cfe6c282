/** A table's scrolling box: at a phone's width a wide table scrolls sideways, and a box
 * that scrolls must be reachable by keyboard (focusable, named) to be scrolled without a
 * pointer. */
import type { ReactNode } from "react";

export function TableWrap({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="table-wrap" role="region" aria-label={label} tabIndex={0}>
      {children}
    </div>
  );
}

/** A plain table (no sorting, no paging of its own) in its scrolling box: a caption for
 * screen readers, a header per column, and `actions` adds a last column for row buttons,
 * named only for screen readers. `children` are the body's rows. */
export function SimpleTable({
  label,
  caption,
  columns,
  actions = false,
  children,
}: {
  label: string;
  caption: string;
  columns: string[];
  actions?: boolean;
  children: ReactNode;
}) {
  return (
    <TableWrap label={label}>
      <table>
        <caption className="sr-only">{caption}</caption>
        <thead>
          <tr>
            {columns.map((c) => (
              <th scope="col" key={c}>
                {c}
              </th>
            ))}
            {actions ? (
              <th scope="col">
                <span className="sr-only">Actions</span>
              </th>
            ) : null}
          </tr>
        </thead>
        <tbody>{children}</tbody>
      </table>
    </TableWrap>
  );
}
