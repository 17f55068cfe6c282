/** A modal question before an action that changes a machine: the native <dialog>, so focus is
 * trapped and Escape cancels without code of ours. */
import { useEffect, useRef } from "react";

export interface ConfirmProps {
  title: string;
  body: string;
  confirmLabel: string;
  onConfirm: () => void;
  onCancel: () => void;
}

export function ConfirmDialog({ title, body, confirmLabel, onConfirm, onCancel }: ConfirmProps) {
  const ref = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open && typeof dialog.showModal === "function") dialog.showModal();
    return () => {
      if (dialog?.open) dialog.close();
    };
  }, []);
  return (
    <dialog ref={ref} className="confirm" aria-labelledby="confirm-title" onCancel={onCancel}>
      <h2 id="confirm-title">{title}</h2>
      <p>{body}</p>
      <div className="row">
        <button type="button" onClick={onCancel}>
          Cancel
        </button>
        <button type="button" className="danger" onClick={onConfirm}>
          {confirmLabel}
        </button>
      </div>
    </dialog>
  );
}

/** The question about `subject` while one is chosen (nothing while it is null): confirming
 * runs `onConfirm` with it, and either answer clears the choice through `onClose`. */
export function ConfirmFor<T>({
  subject,
  title,
  body,
  confirmLabel,
  onConfirm,
  onClose,
}: {
  subject: T | null;
  title: (subject: T) => string;
  body: string | ((subject: T) => string);
  confirmLabel: string | ((subject: T) => string);
  onConfirm: (subject: T) => void;
  onClose: () => void;
}) {
  if (subject === null) return null;
  const say = (text: string | ((s: T) => string)) => (typeof text === "string" ? text : text(subject));
  return (
    <ConfirmDialog
      title={title(subject)}
      body={say(body)}
      confirmLabel={say(confirmLabel)}
      onCancel={onClose}
      onConfirm={() => {
        onConfirm(subject);
        onClose();
      }}
    />
  );
}
