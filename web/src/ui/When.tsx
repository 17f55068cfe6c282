/** A moment as the reader's browser writes its date and time, machine-readable beneath. */
export function When({ at }: { at: string }) {
  return <time dateTime={at}>{new Date(at).toLocaleString()}</time>;
}
