/** A button that puts `text` on the clipboard and says, for screen readers too, whether the
 * browser let it; where it refused, the reader is told to select and copy by hand. */
import { useState } from "react";

export function CopyButton({ text, label }: { text: string; label: string }) {
  const [copied, setCopied] = useState<"yes" | "no" | null>(null);

  async function copy() {
    try {
      await navigator.clipboard.writeText(text);
      setCopied("yes");
    } catch {
      setCopied("no");
    }
  }

  return (
    <>
      <button type="button" onClick={() => void copy()}>
        {label}
      </button>
      <span role="status" className="copied">
        {copied === "yes" ? "Copied." : null}
        {copied === "no" ? "The browser refused the clipboard: select the text and copy it." : null}
      </span>
    </>
  );
}
