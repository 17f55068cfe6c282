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
