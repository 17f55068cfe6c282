/** A progress bar: the native <progress>, so a screen reader announces its value; the
 * figure beside it for the eye. Without a figure yet, it shows as under way (indeterminate). */
import { percent } from "./words";

export function Progress({ value, label }: { value: number | null | undefined; label: string }) {
  const known = value !== null && value !== undefined;
  return (
    <span className="progress">
      {known ? (
        <progress max={100} value={percent(value)} aria-label={label} />
      ) : (
        <progress aria-label={label} />
      )}
      <span aria-hidden="true">{known ? `${percent(value)} %` : "started"}</span>
    </span>
  );
}
