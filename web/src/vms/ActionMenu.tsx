/** The VM's action menu: opened by its row's "Actions" button (Enter, Space, ArrowDown) or a
 * right-click on the row, and driven by the keyboard like a desktop menu (arrows, Home, End,
 * Escape back to the button). It lists only what the VM's life state allows. */
import { useEffect, useId, useRef, useState, type KeyboardEvent } from "react";
import type { VmLifeState } from "../gql/graphql";
import { noActionReason, vmActions, type VmAction } from "./vmActions";

const MENU_WIDTH = 200;
const ITEM_HEIGHT = 36;

type Place = { top: number; left?: number; right?: number };

export interface ActionMenuProps {
  vmName: string;
  lifeState: VmLifeState;
  onPick: (action: VmAction) => void;
  /** Set by a right-click on the row: the menu opens at the pointer. */
  openAt?: { x: number; y: number } | null;
  onClose?: () => void;
}

export function ActionMenu({ vmName, lifeState, onPick, openAt = null, onClose }: ActionMenuProps) {
  const [open, setOpen] = useState<Place | null>(null);
  const [active, setActive] = useState(0);
  const button = useRef<HTMLButtonElement>(null);
  const items = useRef<(HTMLButtonElement | null)[]>([]);
  const menuId = useId();
  const actions = vmActions(lifeState);
  const isOpen = open !== null || openAt !== null;

  useEffect(() => {
    if (isOpen && actions.length > 0) items.current[active]?.focus({ preventScroll: true });
  }, [isOpen, active, actions.length]);

  // A fixed menu would float away from its row on a scroll: it closes instead.
  useEffect(() => {
    if (!isOpen) return;
    const onScroll = () => close(false);
    window.addEventListener("scroll", onScroll, { capture: true, once: true });
    return () => window.removeEventListener("scroll", onScroll, { capture: true });
    // close() reads only refs and setters.
  }, [isOpen]);

  function show(first: number) {
    setActive(first);
    const r = button.current?.getBoundingClientRect();
    if (!r) return setOpen({ top: 8, right: 8 });
    const right = Math.max(8, window.innerWidth - r.right);
    // Below the button, or above it when the menu would run off the bottom of the screen.
    const tall = Math.max(1, actions.length) * ITEM_HEIGHT + 8;
    setOpen(
      r.bottom + 4 + tall > window.innerHeight
        ? { top: Math.max(8, r.top - 4 - tall), right }
        : { top: r.bottom + 4, right },
    );
  }

  function close(refocus: boolean) {
    setOpen(null);
    onClose?.();
    if (refocus) button.current?.focus();
  }

  function onButtonKey(e: KeyboardEvent<HTMLButtonElement>) {
    // The keyboard's own context-menu key, and Shift+F10, open it as a right-click would.
    const contextKey = e.key === "ContextMenu" || (e.shiftKey && e.key === "F10");
    if (e.key === "ArrowDown" || e.key === "Enter" || e.key === " " || contextKey) {
      e.preventDefault();
      show(0);
    } else if (e.key === "ArrowUp") {
      e.preventDefault();
      show(Math.max(0, actions.length - 1));
    }
  }

  function onMenuKey(e: KeyboardEvent<HTMLDivElement>) {
    const n = actions.length;
    if (e.key === "Escape") {
      e.preventDefault();
      close(true);
    } else if (e.key === "Tab") {
      close(false);
    } else if (n > 0 && e.key === "ArrowDown") {
      e.preventDefault();
      setActive((i) => (i + 1) % n);
    } else if (n > 0 && e.key === "ArrowUp") {
      e.preventDefault();
      setActive((i) => (i - 1 + n) % n);
    } else if (n > 0 && e.key === "Home") {
      e.preventDefault();
      setActive(0);
    } else if (n > 0 && e.key === "End") {
      e.preventDefault();
      setActive(n - 1);
    }
  }

  // Fixed, so no scrolling table clips it: under its button, or at the pointer (kept on
  // screen). React sets these through the CSSOM, which the CSP allows.
  const placed: Place | null = openAt
    ? { top: openAt.y, left: Math.max(8, Math.min(openAt.x, window.innerWidth - MENU_WIDTH - 8)) }
    : open;

  return (
    <div className="action-menu">
      <button
        ref={button}
        type="button"
        aria-haspopup="menu"
        aria-expanded={isOpen}
        aria-controls={isOpen ? menuId : undefined}
        aria-label={`Actions for ${vmName}`}
        onClick={() => (isOpen ? close(false) : show(0))}
        onKeyDown={onButtonKey}
      >
        Actions ▾
      </button>
      {isOpen ? (
        <div
          id={menuId}
          role="menu"
          aria-label={`Actions for ${vmName}`}
          className="menu"
          style={placed ? { position: "fixed", ...placed } : undefined}
          onKeyDown={onMenuKey}
          onBlur={(e) => {
            if (!e.currentTarget.contains(e.relatedTarget as Node | null)) close(false);
          }}
          tabIndex={-1}
        >
          {actions.length === 0 ? (
            <p className="menu-empty" role="none">
              {noActionReason(lifeState)}
            </p>
          ) : (
            actions.map((action, i) => (
              <button
                key={action.label}
                ref={(el) => {
                  items.current[i] = el;
                }}
                type="button"
                role="menuitem"
                tabIndex={i === active ? 0 : -1}
                className={action.danger ? "danger" : undefined}
                onClick={() => {
                  close(true);
                  onPick(action);
                }}
              >
                {action.label}
              </button>
            ))
          )}
        </div>
      ) : null}
    </div>
  );
}
