/** Each page names itself in the window title, which is what a screen reader announces
 * first and what a user sees among their tabs. */
import { useEffect } from "react";

export function useTitle(page: string) {
  useEffect(() => {
    document.title = `${page} · Dockyard`;
  }, [page]);
}
